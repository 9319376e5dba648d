"""A taskcut model file: one `.safetensors` holding the weights, with a JSON spec in its metadata.

Loading rebuilds the architecture from the spec and then loads the tensors; nothing is
unpickled, and a factory or function the file names is imported only when the user trusts
it (`taskcut.trust`), so opening a model file runs no code it names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from ..errors import TaskcutError
from ..fileio import save_tensors
from ..trust import Trust, require_trusted, spec_references, trusting
from .multitask import ModelConfig, MultiTaskModel, build_model, layout, shapes_only
from .record import NO_SELECTION, TaskModel, as_record

FORMAT = "taskcut.model"
VERSION = 1
META_KEY = "taskcut"
VALUES = "::values"
MASK = "::mask"


def save(model: nn.Module | TaskModel, path: str | Path, provenance: dict[str, Any] | None = None, *,
         factory: str | None = None, kwargs: Mapping[str, Any] | None = None,
         tasks: Mapping[str, Any] | None = None, selection: Mapping[str, Any] | None = None) -> Path:
    """Write `model` to `path` atomically; `provenance` (how it was made) goes into the spec.

    A masked (unstructured sparse) weight is stored as its kept values plus a packed bit
    mask, so the file shrinks with sparsity: 4 bytes per kept weight + 1 bit per weight.
    A zoo model stores its config. Any other model stores a reference to the factory that
    builds it (`factory="pkg.module:build"` with `kwargs`), its tasks (`{name: Task}`), how
    its tasks were selected (`selection`) and what pruning changed, so `load` rebuilds it by
    calling that factory. Given a `TaskModel` record (what `select`, `prune_model` and
    `open_model` return), these come from the record; a keyword given overrides it.
    """
    from ..compact.masking import masks_of

    record = as_record(model)
    module = record.model
    path = Path(path)
    masks = masks_of(module)
    if isinstance(module, MultiTaskModel):
        described = {"model": module.config.model_dump(mode="json"), "shapes": _changed_shapes(module)}
    else:
        described = _describe_own(module, factory or record.factory,
                                  kwargs if kwargs is not None else record.kwargs,
                                  tasks if tasks is not None else record.tasks,
                                  selection if selection is not None else record.selection)
    spec = {"format": FORMAT, "version": VERSION, **described,
            "masked": {name: list(m.shape) for name, m in masks.items()}, "provenance": provenance or {}}
    _write(module, path, spec, masks)
    return path


def _describe_own(model: nn.Module, factory: str | None, kwargs: Mapping[str, Any],
                  tasks: Mapping[str, Any], selection: Mapping[str, Any]) -> dict[str, Any]:
    from ..cut.select import apply_selection
    from .own import build_from_factory, changed_structure

    if factory is None:
        raise TaskcutError(f"{type(model).__name__} is not a zoo model: it is saved as weights plus the factory that "
                           "builds it; pass factory='package.module:function' (and kwargs=...)")
    kwargs = dict(kwargs)
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise TaskcutError(f"the factory's kwargs must be JSON values (numbers, strings, lists, dicts): {exc}") from None
    selection = dict(selection or NO_SELECTION)
    reference = apply_selection(build_from_factory(factory, kwargs), selection)
    task_dicts = {}
    for name, task in dict(tasks).items():
        try:
            task_dicts[name] = task.to_dict()
        except ValueError:  # a custom task given as a callable: the user passes it again when using the model
            task_dicts[name] = {"kind": "custom", "saved": False}
    return {"model": {"factory": factory, "kwargs": kwargs}, "tasks": task_dicts, "selection": selection,
            "structure": changed_structure(model, reference)}


def packed_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s tensors as a model file stores them (masked weights packed), without a spec."""
    import tempfile

    from ..compact.masking import masks_of

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        _write(model, path, {}, masks_of(model))
        return path.stat().st_size


def _write(model: nn.Module, path: Path, spec: dict[str, Any], masks: Mapping[str, torch.Tensor]) -> None:
    from ..compact.masking import plain_state

    tensors = {}
    for key, value in plain_state(model).items():
        value = value.detach().cpu()
        if key in masks:
            keep = masks[key].cpu()
            tensors[f"{key}{VALUES}"] = value[keep].contiguous()
            tensors[f"{key}{MASK}"] = torch.from_numpy(np.packbits(keep.numpy().reshape(-1)))
        else:
            tensors[key] = value.contiguous()
    save_tensors(tensors, path, {META_KEY: json.dumps(spec)})


def _changed_shapes(model: MultiTaskModel) -> dict[str, list[int]]:
    """Shapes that differ from the architecture the config builds: channels removed by structured pruning."""
    from ..compact.masking import plain_state

    reference = layout(model.config)[1]
    return {k: list(v.shape) for k, v in plain_state(model).items()
            if k in reference and reference[k] != tuple(v.shape)}


def read_spec(path: str | Path) -> dict[str, Any]:
    """The JSON spec of a model file, with a clear error for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise TaskcutError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TaskcutError(f"{path} is not a readable .safetensors file ({exc})") from exc
    if META_KEY not in meta:
        raise TaskcutError(f"{path} is a safetensors file but not a taskcut model (no '{META_KEY}' spec in its metadata)")
    try:
        spec = json.loads(meta[META_KEY])
    except json.JSONDecodeError as exc:
        raise TaskcutError(f"{path}: the taskcut spec in its metadata is not valid JSON") from exc
    if spec.get("format") != FORMAT or spec.get("version") != VERSION:
        raise TaskcutError(f"{path}: unsupported model format {spec.get('format')!r} version {spec.get('version')!r}")
    return spec


def zoo_spec(path: str | Path) -> dict[str, Any]:
    """The spec of a zoo model file (a SceneNet config); an own model's file is refused, after the
    trust check (so a file naming code is refused as such), with the option that takes it."""
    spec = read_spec(path)
    require_trusted(spec_references(spec), str(path))
    if not isinstance(spec.get("model"), dict) or "factory" in spec["model"] or "tasks" not in spec["model"]:
        raise TaskcutError(f"{path} is an own model's file, not a zoo model: give it with the --config YAML "
                           "that names its factory and data")
    return spec


def load(path: str | Path, device: torch.device | str = "cpu", *, trust: Trust = None) -> nn.Module:
    """Rebuild the model saved at `path` (no pickle, no original model needed); `open_model` gives it
    with its tasks and how it was made (what saving an own model again needs).

    A zoo model is built from its config. An own model is built by importing and calling the
    factory its file names, which runs that package's code: so it is done only when the
    factory (and any custom task's functions) is trusted, by `trust` (True, or the
    references) or by the caller's `taskcut.trust.trusting` block; otherwise the error names
    the reference and nothing is imported.
    """
    return open_model(path, device, trust=trust).model


def open_model(path: str | Path, device: torch.device | str = "cpu", *, trust: Trust = None) -> TaskModel:
    """The model saved at `path` as a record: the module (as `load` rebuilds it), its tasks, and for an
    own model the factory, its arguments and the task selection recorded in the file, so `save`,
    `select` and `export_model` given the record need none of them again. Trust as in `load`."""
    path = Path(path)
    spec = read_spec(path)
    with trusting(trust):
        require_trusted(spec_references(spec), str(path))
        return _load(path, spec, device)


def _load(path: Path, spec: dict[str, Any], device: torch.device | str) -> TaskModel:
    model_spec = spec.get("model")
    if isinstance(model_spec, dict) and "factory" in model_spec:
        record = _rebuild_own(path, spec)
        model = record.model
    else:
        try:
            config = ModelConfig.model_validate(model_spec)
        except (ValidationError, KeyError, TypeError) as exc:
            raise TaskcutError(f"{path}: the model spec is invalid ({str(exc).splitlines()[0][:200]})") from None
        with shapes_only():  # shapes first: nothing is allocated (or drawn) before they match the file
            model = build_model(config)
            if spec.get("shapes"):
                from ..compact.structured import reshape_like

                if not isinstance(spec["shapes"], dict):
                    raise TaskcutError(f"{path}: the spec's shapes are not a mapping")
                reshape_like(model, spec["shapes"])
        _check_header(path, model, spec)
        model = model.to_empty(device="cpu")
        record = TaskModel(model, config.task_specs())
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TaskcutError(f"{path}: its tensors cannot be read ({exc})") from exc
    masks = _unpack_masked(path, tensors, spec.get("masked", {}))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise TaskcutError(f"{path}: tensors do not match the spec (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise TaskcutError(f"{path}: tensor {key} has shape {tuple(value.shape)}, the spec wants {tuple(expected[key].shape)}")
    model.load_state_dict(tensors)
    if masks:
        from ..compact.masking import apply_masks

        apply_masks(model, masks)
    return record.replace(model=model.to(device).eval())


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, read from the file's header alone (nothing allocated)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TaskcutError(f"{path}: its tensors cannot be read ({exc})") from exc


def _check_header(path: Path, model: nn.Module, spec: dict[str, Any]) -> None:
    """Every tensor the spec's architecture needs is in the file with its shape (a masked one as a
    packed mask of the right size), read from the header alone: a spec cannot make loading
    allocate more than the file holds."""
    header = _header(path)
    masked = spec.get("masked") or {}
    if not isinstance(masked, dict):
        raise TaskcutError(f"{path}: the spec's masked weights are not a mapping")
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key in masked:
            if list(shape) != list(masked[key]) or header.get(f"{key}{MASK}") != ((value.numel() + 7) // 8,):
                raise TaskcutError(f"{path}: masked weight {key} does not match the spec's shape {shape}")
        elif header.get(key) != shape:
            found = header.get(key)
            raise TaskcutError(f"{path}: tensor {key} has shape {found}, the spec wants {shape}"
                               if found is not None else f"{path}: tensors do not match the spec (missing {key})")


def _rebuild_own(path: Path, spec: dict[str, Any]) -> TaskModel:
    from ..cut.select import apply_selection
    from ..tasks import TaskSpec
    from .own import build_from_factory, restore_structure

    structure = spec.get("structure") or {}
    _check_recorded_shapes(path, structure, spec.get("masked") or {})
    factory, kwargs = str(spec["model"]["factory"]), spec["model"].get("kwargs") or {}
    selection = spec.get("selection") or dict(NO_SELECTION)
    if not isinstance(selection, dict) or not isinstance(kwargs, dict):
        raise TaskcutError(f"{path}: the spec's {'selection' if not isinstance(selection, dict) else 'kwargs'} "
                           "is not a mapping")
    model = apply_selection(build_from_factory(factory, kwargs), selection)
    restore_structure(model, structure)
    tasks = {}
    for name, data in (spec.get("tasks") or {}).items():
        if data.get("saved", True):
            try:
                tasks[name] = TaskSpec.from_dict(name, data)
            except (ValueError, KeyError, TypeError) as exc:
                raise TaskcutError(f"{path}: task {name!r} cannot be rebuilt ({exc})") from exc
    return TaskModel(model, tasks, factory, kwargs, dict(selection))


def _check_recorded_shapes(path: Path, structure: Any, masked: Any) -> None:
    """An own model's recorded shapes are allocated when it is rebuilt: each must be a tensor the file
    holds with that shape (or a packed mask of its size), read from the header before anything else."""
    shapes = structure.get("shapes", {}) if isinstance(structure, dict) else None
    if not isinstance(shapes, dict) or not isinstance(masked, dict):
        raise TaskcutError(f"{path}: the spec's structure is malformed")
    header = _header(path)
    for name, shape in shapes.items():
        if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                  for v in shape):
            raise TaskcutError(f"{path}: the recorded shape of {name} is not a list of sizes")
        numel = math.prod(shape)
        if name in masked:
            fits = list(masked[name]) == shape and header.get(f"{name}{MASK}") == ((numel + 7) // 8,)
        else:
            fits = header.get(name) == tuple(shape)
        if not fits:
            raise TaskcutError(f"{path}: the spec records {name} as {tuple(shape)}, which the file does not hold")


def _unpack_masked(path: Path, tensors: dict[str, torch.Tensor],
                   masked: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Turn stored (values, packed mask) pairs back into dense weights in `tensors`; return the masks."""
    masks = {}
    for name, shape in masked.items():
        if f"{name}{VALUES}" not in tensors or f"{name}{MASK}" not in tensors:
            raise TaskcutError(f"{path}: masked weight {name} lacks its values or mask")
        numel = int(np.prod(shape))
        bits = tensors.pop(f"{name}{MASK}").numpy()
        if bits.size != (numel + 7) // 8:
            raise TaskcutError(f"{path}: the mask of {name} has {bits.size} bytes, its shape {shape} needs {(numel + 7) // 8}")
        keep = torch.from_numpy(np.unpackbits(bits)[:numel].astype(bool)).view(shape)
        values = tensors.pop(f"{name}{VALUES}")
        if values.numel() != int(keep.sum()):
            raise TaskcutError(f"{path}: {name} stores {values.numel()} values for {int(keep.sum())} kept weights")
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[keep] = values
        tensors[name] = dense
        masks[name] = keep
    return masks
