"""Dead parts: submodules whose parameters no kept task's output depends on, replaced by stand-ins.

A user's encoder often computes more than its tasks read: a pooler, an attention-pooling
head, a projection. Their parameters would sit in the compact model, count against a
device's budget and dilute its sparsity, and structured pruning would have to keep them
consistent with channels nothing reads. Such a submodule is replaced by `Unused`, which
returns zeros of the shape it returned (its caller still runs; nothing reads the value).
The replacement is accepted only when every kept output stays bit-identical.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..compact.masking import plain_name
from ..errors import TaskcutError
from ..hooks import forward_hooks
from .decompose import decompose, evaluating, task_outputs

#: The most dimensions and elements a recorded stand-in output may have (the sizes come from a file).
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 24


class Unused(nn.Module):
    """Stands in for a submodule no kept task reads: zeros shaped like its output (batch from the input)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = [int(s) for s in shape]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        first = next((a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)), None)
        batch = first.shape[0] if first is not None and first.dim() > 0 else 1
        device = first.device if first is not None else None
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        return torch.zeros(batch, *self.shape, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"shape=(batch, {', '.join(map(str, self.shape))})"


def dead_modules(model: nn.Module, example: torch.Tensor, tasks: Sequence[str]) -> list[str]:
    """The outermost submodules all of whose parameters no output in `tasks` depends on."""
    decomposition = decompose(model, example, None)
    dead = {name for name, users in decomposition.users.items() if not users & set(tasks)}
    if not dead:
        return []
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f + ".") for f in found):
            continue
        params = [plain_name(f"{name}.{p}") for p, q in module.named_parameters() if q.requires_grad]
        if params and set(params) <= dead:
            found.append(name)
    return found


def _replace(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(attr)
    if isinstance(parent, (nn.ModuleDict, nn.ModuleList, nn.Sequential)):
        parent[attr if isinstance(parent, nn.ModuleDict) else int(attr)] = module
    else:
        setattr(parent, attr, module)
    return old


def remove_dead(model: nn.Module, example: torch.Tensor, tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Replace in place the dead submodules of `model` (for the outputs `tasks`) by `Unused` stand-ins;
    returns what was replaced (`name`, `shape`) for the model file. Modules whose output is not one
    tensor are left; if the outputs would change at all, nothing is replaced."""
    names = dead_modules(model, example, tasks)
    if not names:
        return []
    shapes: dict[str, list[int]] = {}
    modules = {id(model.get_submodule(n)): n for n in names}

    def remember(module: nn.Module, args: Any, out: Any) -> None:
        name = modules[id(module)]
        if isinstance(out, torch.Tensor) and out.dim() >= 1 and name not in shapes:
            shapes[name] = list(out.shape[1:])

    with forward_hooks([model.get_submodule(n) for n in names], remember), torch.no_grad(), evaluating(model):
        before = task_outputs(model(example))
    replaced = [{"name": n, "shape": shapes[n]} for n in names if n in shapes]
    originals = {r["name"]: _replace(model, r["name"], Unused(r["shape"])) for r in replaced}
    try:
        with torch.no_grad(), evaluating(model):
            after = task_outputs(model(example))
        same = list(after) == list(before) and all(torch.equal(after[t], before[t]) for t in before)
    except Exception:  # noqa: BLE001 — the caller used the value after all: keep the modules
        same = False
    if not same:
        for name, module in originals.items():
            _replace(model, name, module)
        return []
    return replaced


def restore_dead(model: nn.Module, records: Any) -> None:
    """Repeat recorded replacements on a freshly built model (a saved file's); bad records are errors."""
    if not isinstance(records, list):
        raise TaskcutError("the model file's list of unused modules is not a list")
    for record in records:
        if not isinstance(record, Mapping) or not isinstance(record.get("name"), str) \
                or not isinstance(record.get("shape"), list):
            raise TaskcutError(f"the model file records an unused module as {str(record)[:80]!r}")
        shape = record["shape"]
        if len(shape) > MAX_DIMS or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape):
            raise TaskcutError(f"the model file records an unused module {record['name']!r} of shape {shape}")
        numel = 1
        for s in shape:
            numel *= s
        if numel > MAX_ELEMENTS:
            raise TaskcutError(f"the model file records an unused module {record['name']!r} of {numel} elements "
                               f"(at most {MAX_ELEMENTS})")
        try:
            model.get_submodule(record["name"])
        except AttributeError:
            raise TaskcutError(f"the factory's model has no module {record['name']!r}: it does not build the model "
                               "this file was pruned from") from None
        _replace(model, record["name"], Unused(shape))
