"""Scores computed once: every task of a base model scored in one pass, kept in a file, reused by `prune`.

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

from ..cut.score import Scores, reduce_scores, score
from ..data.dataset import open_for_tasks, with_class_weights
from ..errors import TaskcutError
from ..settings import MAX_BATCH
from ..fileio import check_writable, file_sha256, save_tensors
from ..models import load
from ..train.distributed import world

FORMAT = "taskcut.scores"
META_KEY = "taskcut_scores"


def write_scores(base: Path, data: str, out: Path, batches: int = 50, batch_size: int = 8, force: bool = False,
                 device: str = "cpu", show_progress: bool = True) -> dict[str, Any] | None:
    """Score every task of `base` on the first `batches` train batches; write them to `out`."""
    base, out = Path(base), Path(out)
    check_writable(out, force)
    if batches < 1 or not 1 <= batch_size <= MAX_BATCH:
        raise TaskcutError(f"--batches must be positive and --batch-size between 1 and {MAX_BATCH}, got {batches} "
                           f"and {batch_size}")
    model = load(base, device)
    specs = model.config.task_specs()
    dataset = open_for_tasks(data, "train", specs)
    specs = with_class_weights(specs, dataset)
    if batches * batch_size > len(dataset):
        raise TaskcutError(f"asked for {batches} batches of {batch_size}, but the train split holds {len(dataset)}")
    scores = score_split(model, specs, dataset, batches, batch_size, device, show_progress)
    if scores is None:
        return None
    return _write(out, file_sha256(base), {"data": data, "batches": batches, "batch_size": batch_size}, scores)


def own_base_digest(cfg: Any) -> str:
    """What identifies an own model's base: its factory, its keyword arguments and its weights file's hash."""
    import hashlib

    weights = file_sha256(cfg._resolve(cfg.model.weights)) if cfg.model.weights else None
    what = {"factory": cfg.model.factory, "kwargs": cfg.model.kwargs, "weights_sha256": weights}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def write_own_scores(cfg: Any, out: Path, batches: int = 50, force: bool = False, device: str = "cpu",
                     show_progress: bool = True) -> dict[str, Any]:
    """`taskcut score --config own.yaml`: every task of the YAML's base model scored once on the first
    `batches` batches of its train split, for `prune --config own.yaml --scores` (any subset, any sparsity)."""
    import itertools

    from ..api import Batches
    from ..cut.score import score

    out = Path(out)
    check_writable(out, force)
    if batches < 1:
        raise TaskcutError(f"--batches must be positive, got {batches}")
    base = cfg.build().to(device)
    data = itertools.islice(Batches(cfg.split("train"), cfg.transform(), device), batches)
    # summed as `prune --config` sums them when it scores itself, so the masks are the same either way
    scores = score(base, cfg.specs, data, device=device, show_progress=show_progress, total=batches)
    return _write(out, own_base_digest(cfg), {"config": "own", "batches": batches}, scores)


def _write(out: Path, base_sha256: str, settings: dict[str, Any], scores: Scores) -> dict[str, Any]:
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


def score_split(model: torch.nn.Module, specs, dataset, batches: int, batch_size: int, device: str,
                show_progress: bool):
    """CUT scores over the first `batches` batches of the train split, summed in float64 over every
    torchrun process (each scores its share of whole batches); None on ranks other than 0."""
    place = world()
    if batches < place.size:
        raise TaskcutError(f"--batches {batches} is fewer than the {place.size} processes sharing them")
    mine = range(place.rank, batches, place.size)  # whole batches, the same ones whatever the process count
    local = (dataset.batch(torch.arange(i * batch_size, (i + 1) * batch_size)) for i in mine)
    scores = reduce_scores(score(model, specs, local, device=device, show_progress=show_progress and place.main,
                                 total=len(mine), float64=True))
    return scores if place.main else None
