"""A model and what taskcut knows about it, carried beside the module instead of on it.

A user's own model is rebuilt from code (its factory) and then cut (the task selection, what
pruning changed). What `save` needs for that — the factory and its arguments, the selection,
the tasks — and what a prune reports (the budget met, the layers left whole) travel in a
`TaskModel` record that each job returns and the next takes, so the user's module carries no
hidden attributes and wrapping it (DDP, `torch.compile`, a user's wrapper) loses nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from torch import nn

from ..errors import TaskcutError

if TYPE_CHECKING:
    from ..tasks import TaskSpec

#: The selection of a model nothing was removed from.
NO_SELECTION: dict[str, Any] = {"mechanism": "none"}


@dataclass
class TaskModel:
    """A model with its tasks and how to rebuild it.

    `model` is the module itself; `tasks` its tasks (`{name: TaskSpec}`, the order of its outputs);
    `factory`/`kwargs` the user's factory that builds the uncut model (none for a zoo model, whose
    config is part of the module); `selection` how the tasks were selected on what the factory
    builds (`taskcut.cut.select`); `budget` the budget report of a budgeted prune; `left_whole`
    the layers structured pruning could not cut safely.
    """

    model: nn.Module
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=lambda: dict(NO_SELECTION))
    budget: dict[str, Any] | None = None
    left_whole: list[str] = field(default_factory=list)

    def replace(self, **changes: Any) -> TaskModel:
        """The same record with some fields changed (`model=` after a job made a new module)."""
        return dataclasses.replace(self, **changes)


def as_record(model: nn.Module | TaskModel, tasks: Mapping[str, TaskSpec] | None = None) -> TaskModel:
    """`model` as a record: a record is returned as it is (with `tasks` when it has none); a module is
    wrapped with nothing known about it but `tasks`."""
    if isinstance(model, TaskModel):
        return model if model.tasks or not tasks else model.replace(tasks=dict(tasks))
    if not isinstance(model, nn.Module):
        raise TaskcutError(f"expected an nn.Module or a taskcut TaskModel, got a {type(model).__name__}")
    return TaskModel(model, dict(tasks or {}))


def module_of(model: nn.Module | TaskModel) -> nn.Module:
    """The module of a record, or the module itself."""
    return model.model if isinstance(model, TaskModel) else model
