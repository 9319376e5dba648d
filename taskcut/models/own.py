"""Own models in model files: the weights in safetensors plus a reference to the user's factory.

A user's model class is not ours to rebuild from a config, and pickling the module would
make loading run arbitrary code hidden in a file. Instead the file names an importable
factory (`"mypkg.models:build"`) and its keyword arguments; loading imports that factory,
which runs the user's own code (as importing their package would), then repeats the task
selection, brings every tensor and integer attribute that pruning changed to its recorded
value (so channel- and head-pruned models rebuild), and loads the weights. Nothing is
unpickled.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import TaskcutError


def import_callable(reference: str, what: str = "factory") -> Callable[..., Any]:
    """`"package.module:function"` -> the function; a clear error naming the reference otherwise."""
    from ..tasks.references import import_object

    try:
        fn = import_object(reference, what)
    except ValueError as exc:
        raise TaskcutError(str(exc).splitlines()[0]) from None
    if not callable(fn):
        raise TaskcutError(f"{what} {reference!r} is not callable")
    return fn  # type: ignore[no-any-return]


def build_from_factory(factory: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the user's factory (this runs their code) and check it returns a module."""
    fn = import_callable(factory)
    try:
        model = fn(**dict(kwargs or {}))
    except Exception as exc:
        raise TaskcutError(f"factory {factory!r} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(model, nn.Module):
        raise TaskcutError(f"factory {factory!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def changed_structure(model: nn.Module, reference: nn.Module) -> dict[str, Any]:
    """What pruning changed against a freshly built `reference`: tensor shapes and integer attributes
    (channel and head counts, a LayerNorm's shape), each keyed by its module's name."""
    ref_state = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    missing = sorted(set(ref_state) - set(_plain_tensors(model)))
    traced = isinstance(model, torch.fx.GraphModule)
    if missing or traced != isinstance(reference, torch.fx.GraphModule):
        what = f"has no {missing[0]}, which" if missing else \
            f"is {'' if traced else 'not '}a torch.fx trace, as"
        raise TaskcutError(f"{type(model).__name__} {what} the factory's model (after the recorded selection) has: "
                           "save the record that select/prune_model returned (it holds how the tasks were "
                           "selected), or pass selection=")
    shapes = {k: list(v.shape) for k, v in _plain_tensors(model).items()
              if k in ref_state and ref_state[k] != tuple(v.shape)}
    ref_modules = dict(reference.named_modules())
    attributes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None:
            continue
        changed = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(module).items()
                   if _sizes(v) and _sizes(vars(ref).get(k)) and type(v) is type(vars(ref)[k]) and vars(ref)[k] != v}
        if changed:
            attributes[name] = changed
    return {"shapes": shapes, "attributes": attributes}


def restore_structure(model: nn.Module, structure: Mapping[str, Any]) -> nn.Module:
    """Give a freshly built model the recorded shapes (empty tensors, filled by loading) and integers."""
    for name, shape in structure.get("shapes", {}).items():
        owner_name, _, attr = name.rpartition(".")
        try:
            owner = model.get_submodule(owner_name) if owner_name else model
        except AttributeError:
            raise TaskcutError(f"the rebuilt model has no {owner_name!r} for the recorded tensor {name}") from None
        old = getattr(owner, attr, None)
        if not isinstance(old, torch.Tensor):
            raise TaskcutError(f"the rebuilt model has no tensor {name}")
        new = torch.empty([int(s) for s in shape], dtype=old.dtype)
        if isinstance(old, nn.Parameter):
            setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            owner.register_buffer(attr, new)
    for name, values in structure.get("attributes", {}).items():
        module = model.get_submodule(name) if name else model
        for key, value in values.items():
            setattr(module, key, tuple(int(v) for v in value) if isinstance(value, list) else int(value))
    return model


def _sizes(value: object) -> bool:
    """An integer, or a tuple of integers (a LayerNorm's normalized_shape): what channel pruning changes."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, tuple) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value)


def _plain_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    from ..compact.masking import plain_state

    return plain_state(model)
