"""Importing SceneNet checkpoints of AdaShare, DiSparse and the CUT paper's code.

Their models name the trunk `backbone.*` (stem `conv1`/`bn1`, residual blocks under
`blocks.{stage}.{block}`, shortcuts under `ds.{stage}`) and the heads `task{i}_fc1_c{j}.*`
(task i's ASPP branch j). Checkpoints may wrap the weights in a dict (`state_dict`,
`model`, `mtl-net`, ...), carry DataParallel's `module.` prefix, and, when pruned with
`torch.nn.utils.prune`, hold `weight_orig` + `weight_mask` instead of `weight`.

Files are read with `torch.load(weights_only=True)` only: a pickle that would build
arbitrary objects or run code is refused, never executed.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .multitask import ModelConfig, TaskConfig
from ..errors import TaskcutError
from .multitask import MultiTaskModel, build_model

#: Task names whose kind is known without asking (AdaShare calls normals `sn`).
KNOWN_KINDS = {"seg": "segmentation", "normal": "normal", "sn": "normal", "depth": "depth",
               "keypoint": "keypoint", "edge": "edge"}
ARCHS = {"scenenet-resnet18": 18, "scenenet-resnet34": 34}
CONTAINER_KEYS = ("state_dict", "model", "mtl-net", "net", "network", "model_state_dict")
#: AdaShare's per-task policy logits: architecture-search state, not weights of the network.
POLICY_KEY = re.compile(r"^task\d+_logits$")

_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.(\d+)\.(.+)$")
_SHORTCUT = re.compile(r"^backbone\.ds\.(\d+)\.(\d+)\.(.+)$")
_HEAD = re.compile(r"^task(\d+)_fc1_c(\d+)\.(.+)$")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a foreign checkpoint, loaded without executing code."""
    if not path.is_file():
        raise TaskcutError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # torch.save writes a zip archive or a pickle
        kind = ("a safetensors file" if len(head) > 8 and head[8:9] == b"{" else
                "JSON or text" if head.lstrip()[:1] in (b"{", b"[") else "not a zip archive or a pickle")
        raise TaskcutError(f"{path}: not a PyTorch checkpoint ({kind}); import reads .pth/.pth.tar files")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskcutError(f"{path}: refused; the file holds pickled objects that a weights-only load does not "
                           f"allow (it could run code). {first[:200]}") from exc
    except Exception as exc:  # noqa: BLE001 - any parse failure of a foreign file means "not a checkpoint"
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise TaskcutError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {detail})") from exc
    state = _find_state(obj)
    if state is None:
        raise TaskcutError(f"{path}: no state dict of tensors found (looked at the top level and under "
                           f"{', '.join(CONTAINER_KEYS)})")
    return state


def _find_state(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            found = _find_state(obj.get(key)) if key in obj else None
            if found is not None:
                return found
    return None


def bake_pruned(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Strip `module.`, fold `X_orig * X_mask` into `X`; the masks come back beside the weights."""
    plain = {k.removeprefix("module."): v for k, v in state.items()}
    out, masks = {}, {}
    for key, value in plain.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in plain:
            continue
        if key.endswith("_orig"):
            name = key[: -len("_orig")]
            mask = plain.get(name + "_mask")
            if mask is None:
                raise TaskcutError(f"checkpoint holds {key} but no {name}_mask to go with it")
            out[name] = value * mask.to(value.dtype)
            masks[name] = mask.to(torch.bool)
        else:
            out[key] = value
    return out, masks


def translate_key(key: str, tasks: Sequence[str]) -> str | None:
    """The taskcut name of a reference key, or None when it is not a SceneNet key."""
    if key.startswith("backbone.conv1.") or key.startswith("backbone.bn1."):
        return "trunk." + key[len("backbone."):]
    m = _BLOCK.match(key)
    if m:
        return f"trunk.layer{int(m[1]) + 1}.{m[2]}.{m[3]}"
    m = _SHORTCUT.match(key)
    if m:
        return f"trunk.layer{int(m[1]) + 1}.0.downsample.{m[2]}.{m[3]}"
    m = _HEAD.match(key)
    if m and 1 <= int(m[1]) <= len(tasks):
        return f"heads.{tasks[int(m[1]) - 1]}.branches.{m[2]}.{m[3]}"
    return None


def reference_key(key: str, tasks: Sequence[str]) -> str:
    """The reference name of a taskcut key (for error messages in the user's vocabulary)."""
    m = re.match(r"^trunk\.layer(\d+)\.0\.downsample\.(\d+)\.(.+)$", key)
    if m:
        return f"backbone.ds.{int(m[1]) - 1}.{m[2]}.{m[3]}"
    m = re.match(r"^trunk\.layer(\d+)\.(\d+)\.(.+)$", key)
    if m:
        return f"backbone.blocks.{int(m[1]) - 1}.{m[2]}.{m[3]}"
    if key.startswith("trunk."):
        return "backbone." + key[len("trunk."):]
    m = re.match(r"^heads\.([^.]+)\.branches\.(\d+)\.(.+)$", key)
    if m and m[1] in tasks:
        return f"task{list(tasks).index(m[1]) + 1}_fc1_c{m[2]}.{m[3]}"
    return key


def parse_tasks(text: str) -> list[tuple[str, str]]:
    """`seg,normal,depth` or `name:kind,...` to (name, kind) in checkpoint order."""
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, kind = part.partition(":")
        kind = kind or KNOWN_KINDS.get(name, "")
        if not kind:
            raise TaskcutError(f"task {name!r}: say its kind as {name}:KIND (segmentation, normal, depth, "
                               f"keypoint, edge); known names: {', '.join(KNOWN_KINDS)}")
        out.append((name, kind))
    if not out:
        raise TaskcutError("--tasks names no task")
    if len({n for n, _ in out}) != len(out):
        raise TaskcutError(f"--tasks {text!r} names a task twice")
    return out


def import_state(state: Mapping[str, torch.Tensor], arch: str, tasks: Sequence[tuple[str, str]],
                 template: ModelConfig | None = None) -> MultiTaskModel:
    """A taskcut SceneNet holding the reference checkpoint's weights (masks kept, so sparsity survives)."""
    from ..compact.masking import apply_masks

    if arch not in ARCHS:
        hint = " (its Bottleneck puts the stride in the 1x1 convolution, ours in the 3x3)" if arch.endswith("50") else ""
        raise TaskcutError(f"unknown or unsupported --arch {arch!r}{hint}; supported: {', '.join(ARCHS)}")
    weights, masks = bake_pruned(state)
    weights = {k: v for k, v in weights.items() if not POLICY_KEY.match(k)}
    names = [n for n, _ in tasks]
    mapped, unexpected = {}, []
    for key, value in weights.items():
        new = translate_key(key, names)
        if new is None:
            unexpected.append(key)
        else:
            mapped[new] = value
    config = _config_from(mapped, arch, tasks, template, unexpected)
    model = build_model(config)
    expected = model.state_dict()
    missing = [reference_key(k, names) for k in expected if k not in mapped]
    unexpected += [reference_key(k, names) for k in mapped if k not in expected]
    if missing or unexpected:
        raise TaskcutError(_mismatch(missing, unexpected, arch, names))
    wrong = [f"{reference_key(k, names)} {tuple(mapped[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(mapped[k].shape) != tuple(v.shape)]
    if wrong:
        raise TaskcutError(f"checkpoint shapes do not fit {arch}: {len(wrong)} tensor(s), e.g. {'; '.join(wrong[:3])}")
    model.load_state_dict(mapped)
    reverse = {translate_key(k, names): v for k, v in masks.items()}
    if reverse:
        apply_masks(model, {k: v for k, v in reverse.items() if k is not None})
    model.eval()
    return model


def _config_from(mapped: Mapping[str, torch.Tensor], arch: str, tasks: Sequence[tuple[str, str]],
                 template: ModelConfig | None, unexpected: list[str]) -> ModelConfig:
    stem = mapped.get("trunk.conv1.weight")
    first = mapped.get(f"heads.{tasks[0][0]}.branches.0.conv1.weight")
    if stem is None or first is None:
        raise TaskcutError(_mismatch(["backbone.conv1.weight" if stem is None else "task1_fc1_c0.conv1.weight"],
                                     unexpected, arch, [n for n, _ in tasks]))
    task_cfg = {}
    for name, kind in tasks:
        out = mapped.get(f"heads.{name}.branches.0.conv3.weight")
        if out is None:
            raise TaskcutError(f"the checkpoint has no head for task {name!r} (task{len(task_cfg) + 1}_fc1_c0.conv3); "
                               f"--tasks names {len(tasks)} task(s)")
        weight = template.tasks[name].loss_weight if template and name in template.tasks else 1.0
        task_cfg[name] = TaskConfig(kind=kind, channels=int(out.shape[0]), loss_weight=weight)
    branches = len({k.split(".")[3] for k in mapped if k.startswith(f"heads.{tasks[0][0]}.branches.")})
    dilations = list(template.head_dilations) if template else [6, 12, 18, 24][:branches]
    try:
        return ModelConfig(depth=ARCHS[arch], width=int(stem.shape[0]) / 64, head_hidden=int(first.shape[0]),
                           head_dilations=dilations, dropout=template.dropout if template else 0.5, tasks=task_cfg)
    except ValueError as exc:
        raise TaskcutError(f"cannot build a model for this checkpoint: {exc}") from exc


def _mismatch(missing: list[str], unexpected: list[str], arch: str, tasks: list[str]) -> str:
    parts = [f"the checkpoint does not fit {arch} with tasks {','.join(tasks)}:"]
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:4])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:4])}")
    return " ".join(parts)


def import_checkpoint(path: Path, arch: str, tasks: str, out: Path, template: ModelConfig | None = None,
                      force: bool = False) -> MultiTaskModel:
    """Read a reference checkpoint and write it as a taskcut model file; nothing is written on error."""
    from ..fileio import check_writable, file_sha256
    from .io import save

    path, out = Path(path), Path(out)
    check_writable(out, force)
    if out.resolve() == path.resolve():
        raise TaskcutError(f"--out {out} would overwrite the checkpoint")
    model = import_state(read_checkpoint(path), arch, parse_tasks(tasks), template)
    save(model, out, {"imported_from": str(path), "source_sha256": file_sha256(path), "arch": arch,
                      "tasks": [n for n, _ in parse_tasks(tasks)]})
    return model
