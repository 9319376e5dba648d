"""Task selection as surgery: the returned model holds and computes only the chosen tasks.

Three mechanisms, tried in this order; each result is checked on the example input (the
chosen outputs identical to the original's, no other output, no parameter left that only
unselected tasks use) before it is accepted:

* zoo (`MultiTaskModel`): the unselected heads are dropped.
* `delete`: the user's own module, with the submodules that only unselected tasks use (as
  `decompose` finds them) deleted from the `nn.ModuleDict` holding them. Works for any
  forward that loops over a dict of heads (`{t: head(f) for t, head in self.heads.items()}`),
  whatever else it does (transformer encoders, data-dependent control flow). The module
  keeps its class and forward, so it trains, exports and reloads from the user's factory.
  What only the unselected tasks used outside the dict (a neck they shared) is then dead:
  the forward still computes it, nothing reads it, and it is replaced by a stand-in
  (`taskcut.cut.dead`), as every selection's dead parts are.
* `fx`: torch.fx traces the forward; the output is cut to the chosen tasks, dead code is
  eliminated and submodules nothing calls any more are deleted. Works for forwards that
  name each head explicitly (`self.seg_head(f)`) if fx can trace them (no data-dependent
  control flow, no untraceable library code).
* otherwise a clear error saying what to change (keep the heads in an `nn.ModuleDict`
  keyed by task name and loop over it).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import fx, nn

from ..compact.masking import plain_name
from ..errors import TaskcutError, check_choice
from ..models.multitask import MultiTaskModel
from ..models.record import TaskModel, as_record
from .decompose import decompose, evaluating, task_outputs


def check_tasks(available: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The chosen tasks in the model's order; unknown or empty choices are clear errors."""
    return check_choice(list(available), list(wanted), "task", "the model's tasks are")


def select(model: nn.Module | TaskModel, tasks: Sequence[str],
           example_input: torch.Tensor | None = None) -> TaskModel:
    """A copy of `model` that computes only `tasks`, as a record (`TaskModel`) holding the copy, the
    chosen tasks' specs where known and how they were selected (what `save` needs to rebuild an own
    model); the original is left untouched.

    Own models need `example_input` (one batch of inputs) for the `delete` mechanism and for
    checking the result; without it only fx tracing is tried. A record from `open_model` (a saved
    own model, already selected) can be selected again: the record then holds both selections, in
    order, and a saved file replays them on what the factory builds.
    """
    given = as_record(model)
    module = given.model
    if isinstance(module, MultiTaskModel):
        chosen = check_tasks(module.tasks, tasks)
        config = module.config.model_copy(update={"tasks": {t: module.config.tasks[t] for t in chosen}}, deep=True)
        # the trunk and the chosen heads copied, not the unselected heads (a fleet selects once per device)
        small = MultiTaskModel(copy.deepcopy(module.trunk), {t: copy.deepcopy(module.heads[t]) for t in chosen},
                               config).train(module.training)
        specs = config.task_specs()
        return given.replace(model=small, tasks={t: specs[t] for t in chosen})
    small, record = _select_own(module, tasks, example_input)
    return given.replace(model=small, tasks={t: given.tasks[t] for t in record["tasks"] if t in given.tasks},
                         selection=_composed(given.selection, record))


def _select_own(model: nn.Module, tasks: Sequence[str],
                example_input: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
    """The selected copy of an own model and the record of how (mechanism, tasks, what was removed)."""
    if example_input is None:
        small, chosen = _select_traced(model, tasks)
        return small, {"mechanism": "fx", "tasks": chosen}
    with torch.no_grad(), evaluating(model):
        expected = task_outputs(model(example_input))
    chosen = check_tasks(list(expected), tasks)
    if chosen == list(expected):
        small = copy.deepcopy(model)
        return small, _without_dead(small, example_input, {"mechanism": "none", "tasks": chosen, "removed": []})
    reasons = []
    try:
        small, removed, uncovered = _select_by_deletion(model, chosen, example_input)
        _check(small, chosen, expected, example_input)
        record = _without_dead(small, example_input, {"mechanism": "delete", "tasks": chosen, "removed": removed})
        left = sorted(uncovered & {plain_name(n) for n, _ in small.named_parameters()})
        if left:  # used by unselected tasks only, outside the heads, and not dead after all: it still runs
            raise _NotApplicable(f"{left[0]} (used by unselected tasks only) is not in an nn.ModuleDict entry")
        return small, record
    except _NotApplicable as exc:
        reasons.append(f"deleting the unselected heads: {exc}")
    try:
        small, _ = _select_traced(model, chosen)
        _check(small, chosen, expected, example_input)
        return small, _without_dead(small, example_input, {"mechanism": "fx", "tasks": chosen})
    except (TaskcutError, _NotApplicable) as exc:
        reasons.append(f"torch.fx: {exc}")
    raise TaskcutError(f"cannot remove the unselected tasks from {type(model).__name__} ({'; '.join(reasons)}). "
                       "Keep the task heads in an nn.ModuleDict keyed by task name and build the output by looping "
                       "over it, e.g. {t: head(features) for t, head in self.heads.items()}")


#: The most selections a model file may record one after another (a file is data: its lists are bounded).
MAX_STEPS = 16


def _composed(before: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """One selection record for a selection made on an already selected model (a saved file's): both
    selections, replayed in order on what the factory builds."""
    if before.get("mechanism", "none") == "none" and not before.get("dead"):
        return step
    if step["mechanism"] == "none" and not step.get("dead"):
        return {**before, "tasks": step["tasks"]}
    steps = list(before["steps"]) if before.get("mechanism") == "steps" else [before]
    if len(steps) >= MAX_STEPS:
        raise TaskcutError(f"this model was selected {len(steps)} times already: select on the model its factory "
                           "builds")
    return {"mechanism": "steps", "tasks": step["tasks"], "steps": [*steps, step]}


def _without_dead(small: nn.Module, example: torch.Tensor, record: dict[str, Any]) -> dict[str, Any]:
    """Replace the submodules no chosen task reads (a pooler, an attention-pooling head) by stand-ins,
    and add them to the selection `record` so a saved file rebuilds the same model."""
    from .dead import remove_dead

    dead = remove_dead(small, example, list(record["tasks"]))
    return {**record, "dead": dead} if dead else record


class _NotApplicable(Exception):
    """A selection mechanism does not fit this model (the next one is tried)."""


def _check(small: nn.Module, chosen: list[str], expected: dict[str, torch.Tensor], example: torch.Tensor) -> None:
    """The selected model gives the chosen outputs exactly, and nothing else."""
    with torch.no_grad(), evaluating(small):
        try:
            got = task_outputs(small(example))
        except TaskcutError:
            raise
        except Exception as exc:  # the user's forward fails without the removed parts
            raise _NotApplicable(f"the forward fails ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from exc
    if list(got) != chosen:
        raise _NotApplicable(f"it returns {list(got)}, not {chosen}")
    for task in chosen:
        if got[task].shape != expected[task].shape or not torch.equal(got[task], expected[task]):
            raise _NotApplicable(f"output {task!r} changes")


def _select_by_deletion(model: nn.Module, chosen: list[str],
                        example: torch.Tensor) -> tuple[nn.Module, list[str], set[str]]:
    decomposition = decompose(model, example)
    unselected = frozenset(decomposition.tasks) - set(chosen)
    only_unselected = {n for n, users in decomposition.users.items() if users and users <= unselected}
    if not only_unselected:
        raise _NotApplicable("no parameter is used by the unselected tasks alone")
    removable: list[str] = []
    for name, module in model.named_modules():
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        if not name or not params or not set(params) <= only_unselected:
            continue
        if any(name.startswith(r + ".") for r in removable):
            continue  # inside a submodule already chosen
        parent_name, _, key = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.ModuleDict):
            removable.append(name)
    covered = {p for p in only_unselected if any(p.startswith(r + ".") for r in removable)}
    if not removable:
        left = sorted(only_unselected)
        raise _NotApplicable(f"{left[0]} (used by unselected tasks only) is not in an nn.ModuleDict entry")
    small = copy.deepcopy(model)
    for name in removable:
        parent_name, _, key = name.rpartition(".")
        del small.get_submodule(parent_name)[key]
    # what only the unselected tasks used outside the heads (a neck they share) is left to the dead-part
    # removal, once the heads that read it are gone
    return small, removable, only_unselected - covered


def apply_selection(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Repeat a recorded selection on a freshly built model (rebuilding a saved own model): the same
    entries deleted, or the same fx trace cut to the same tasks (both deterministic, names kept)."""
    from .dead import restore_dead

    mechanism = record.get("mechanism")
    if mechanism == "steps":
        steps = record.get("steps")
        if not isinstance(steps, list) or not 0 < len(steps) <= MAX_STEPS or \
                not all(isinstance(s, dict) and s.get("mechanism") != "steps" for s in steps):
            raise TaskcutError(f"the selection recorded in the model file is malformed (1 to {MAX_STEPS} steps)")
        for step in steps:
            model = apply_selection(model, step)
        return model
    if mechanism in ("none", None):
        restore_dead(model, record.get("dead", []))
        return model
    if mechanism == "fx":
        small, _ = _select_traced(model, list(record.get("tasks", [])))
        restore_dead(small, record.get("dead", []))
        return small
    if mechanism != "delete":
        raise TaskcutError(f"unknown selection {mechanism!r} recorded in the model file")
    for name in record.get("removed", []):
        parent_name, _, key = str(name).rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
        except AttributeError:
            parent = None
        if not isinstance(parent, nn.ModuleDict) or key not in parent:
            raise TaskcutError(f"the factory's model has no ModuleDict entry {name!r} to remove: it does not build "
                               "the model this file was pruned from")
        del parent[key]
    restore_dead(model, record.get("dead", []))
    return model


def _select_traced(model: nn.Module, tasks: Sequence[str]) -> tuple[fx.GraphModule, list[str]]:
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
    return traced, chosen


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
