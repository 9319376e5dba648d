"""The scores file: every task of a base model scored in one pass (`taskcut.jobs.score`), reused by `prune`.

A task's CUT scores |w * dL_t/dw| depend only on the weights its own output uses, so the
scores of the full model are exactly those of any selection holding that task: one pass
(one forward per batch, one backward per task) serves every device of a fleet. The file
records the base model's hash and the scoring settings; a file from another model or other
settings is refused, saying which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open

from ..cut.score import Scores
from ..errors import TaskcutError
from ..fileio import file_sha256, save_tensors

FORMAT = "taskcut.scores"
META_KEY = "taskcut_scores"


def own_base_digest(cfg: Any) -> str:
    """What identifies an own model's base: its factory, its keyword arguments and its weights file's hash."""
    import hashlib

    weights = file_sha256(cfg._resolve(cfg.model.weights)) if cfg.model.weights else None
    what = {"factory": cfg.model.factory, "kwargs": cfg.model.kwargs, "weights_sha256": weights}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def write_scores_file(out: Path, base_sha256: str, settings: dict[str, Any], scores: Scores) -> dict[str, Any]:
    meta = {"format": FORMAT, "base_sha256": base_sha256, "tasks": list(scores), "settings": settings,
            "tensor_names": {task: sorted(per) for task, per in scores.items()}}
    tensors = {f"{task}|{name}": value.to(torch.float64).contiguous().cpu()
               for task, per in scores.items() for name, value in per.items()}
    save_tensors(tensors, out, {META_KEY: json.dumps(meta)})
    return {**meta, "tensors": len(tensors), "bytes": out.stat().st_size}


def _read_meta(path: Path) -> dict[str, Any]:
    """A scores file's metadata, with one clear line for anything that is not a readable scores file."""
    if not path.is_file():
        raise TaskcutError(f"scores file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "null") or "null")
    except (SafetensorError, OSError, ValueError) as exc:
        raise TaskcutError(f"{path} is not a readable scores file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("settings"), dict):
        raise TaskcutError(f"{path} is not a taskcut scores file (write one with `taskcut score`)")
    return meta


def scoring_settings(path: Path) -> dict[str, Any]:
    """The scoring settings (data, batches, batch size) a scores file records, for `prune --scores`."""
    return dict(_read_meta(Path(path))["settings"])


#: The tensors of the scores file read last, kept while the file is unchanged: a fleet prunes every device
#: from one file, and the same tensor objects let `fuse` sort each task's scores once (`fuse._task_ranks`).
_HELD: dict[tuple, dict[str, torch.Tensor]] = {}
#: Scores files up to this size are held (full-size models' files are read each time instead).
HOLD_BYTES = 256 << 20


def _held(path: Path) -> dict[str, torch.Tensor]:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _HELD:
        _HELD.clear()
        _HELD[key] = {}
    return _HELD[key]


def read_scores(path: Path, base: Path, tasks: Sequence[str], settings: Mapping[str, Any],
                params: Mapping[str, torch.Tensor], base_sha256: str | None = None) -> Scores:
    """The scores of `tasks` for the weights in `params`, after checking the file belongs to `base`
    (its file's hash, or `base_sha256` for an own model's base) and was made with `settings`."""
    path = Path(path)
    meta = _read_meta(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if meta.get("base_sha256") != (base_sha256 or file_sha256(base)):
                raise TaskcutError(f"{path} holds scores of another base model than {base}; score this one")
            if meta.get("settings") != dict(settings):
                raise TaskcutError(f"{path} was scored with {meta.get('settings')}, not {dict(settings)}: give the "
                                   "same --data, --batches and --batch-size, or score again")
            missing = [t for t in tasks if t not in meta.get("tasks", [])]
            if missing:
                raise TaskcutError(f"{path} has no scores for task(s) {', '.join(missing)}")
            listed = meta.get("tensor_names")
            if not isinstance(listed, dict) or any(not isinstance(listed.get(t), list) for t in meta["tasks"]):
                raise TaskcutError(f"{path} does not list its tensors (written by an older taskcut): score again")
            present = set(keys)
            absent = [f"{t}|{n}" for t in meta["tasks"] for n in listed[t] if f"{t}|{n}" not in present]
            if absent:
                raise TaskcutError(f"{path} lacks {len(absent)} of the score tensors it lists (first: {absent[0]}); "
                                   "the file is damaged: score again")
            out: Scores = {t: {} for t in tasks}
            held = _held(path)
            hold = path.stat().st_size <= HOLD_BYTES
            for key in keys:
                task, _, name = key.partition("|")
                if task in out and name in params:
                    value = held[key] if key in held else f.get_tensor(key)
                    if hold:
                        held[key] = value
                    if value.shape != params[name].shape:
                        raise TaskcutError(f"{path}: the score of {name} has shape {tuple(value.shape)}, the weight "
                                           f"{tuple(params[name].shape)}")
                    out[task][name] = value
    except (SafetensorError, OSError, ValueError) as exc:
        raise TaskcutError(f"{path} is not a readable scores file ({str(exc).splitlines()[0]})") from exc
    return out

