"""Task selection as surgery: the returned model holds and computes only the chosen tasks.

For the SceneNet zoo the unselected heads are dropped. Any other model is traced with
torch.fx; the output is cut down to the chosen tasks, dead code is eliminated, and
submodules nothing calls any more are deleted, so their parameters leave the state_dict.
"""

from __future__ import annotations

import copy
from typing import Sequence

from torch import fx, nn

from ..errors import TaskcutError, check_choice
from ..models.multitask import MultiTaskModel


def check_tasks(available: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The chosen tasks in the model's order; unknown or empty choices are clear errors."""
    return check_choice(list(available), list(wanted), "task", "the model's tasks are")


def select(model: nn.Module, tasks: Sequence[str]) -> nn.Module:
    """A copy of `model` that computes only `tasks`; the original is left untouched."""
    if isinstance(model, MultiTaskModel):
        chosen = check_tasks(model.tasks, tasks)
        config = model.config.model_copy(update={"tasks": {t: model.config.tasks[t] for t in chosen}}, deep=True)
        small = copy.deepcopy(model)
        for name in model.tasks:
            if name not in chosen:
                del small.heads[name]
        small.config = config
        return small
    return _select_traced(model, tasks)


def _select_traced(model: nn.Module, tasks: Sequence[str]) -> fx.GraphModule:
    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:  # fx raises many types; all mean "not traceable"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaskcutError(f"{type(model).__name__} cannot be traced by torch.fx, so its unselected tasks cannot be "
                           f"removed ({first})") from exc
    graph = traced.graph
    output = next(n for n in graph.nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, dict):
        raise TaskcutError(f"{type(model).__name__}.forward must return a dict keyed by task to select tasks from it")
    chosen = check_tasks(list(result), tasks)
    output.args = ({t: result[t] for t in chosen},)
    graph.eliminate_dead_code()
    traced.delete_all_unused_submodules()
    _drop_unused_attributes(traced)
    traced.recompile()
    return traced


def _drop_unused_attributes(gm: fx.GraphModule) -> None:
    """Delete parameters that neither a `get_attr` node nor a called module still uses."""
    fetched = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for name, _ in list(gm.named_parameters()):
        parts = name.split(".")
        if name in fetched or {".".join(parts[:i]) for i in range(1, len(parts))} & called:
            continue
        owner, _, attr = name.rpartition(".")
        delattr(gm.get_submodule(owner) if owner else gm, attr)
