"""Which tasks use which parameters, read from the autograd graph of each task's output.

No names are matched: a parameter belongs to task t when t's output depends on it through
the graph of one forward pass. Shared = used by two or more tasks; head of t = used by t
alone. This works for any `nn.Module` whose forward returns `{task: tensor}` (or a
list/tuple when task names are given), whatever its layout: heads with skip connections
from the trunk, necks shared by some tasks only, and so on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from ..compact.masking import plain_name
from ..errors import TaskcutError


@dataclass(frozen=True)
class Decomposition:
    """`users[name]` is the set of tasks whose output depends on parameter `name`."""

    tasks: tuple[str, ...]
    users: Mapping[str, frozenset[str]]

    @property
    def shared(self) -> list[str]:
        return [n for n, users in self.users.items() if len(users) >= 2]

    def head(self, task: str) -> list[str]:
        return [n for n, users in self.users.items() if users == frozenset({task})]

    @property
    def unused(self) -> list[str]:
        return [n for n, users in self.users.items() if not users]

    def used_by(self, task: str) -> list[str]:
        return [n for n, users in self.users.items() if task in users]


def task_outputs(output: object, task_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """A model's output as `{task: tensor}`, or a clear error when it is not keyed by task."""
    if isinstance(output, Mapping):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in output.items()):
            raise TaskcutError("the model's output dict must map task names (str) to tensors")
        if task_names is not None and list(task_names) != list(output):
            raise TaskcutError(f"task names {list(task_names)} do not match the model's outputs {list(output)}")
        return dict(output)
    if isinstance(output, (list, tuple)) and task_names is not None:
        if len(output) != len(task_names) or not all(isinstance(v, torch.Tensor) for v in output):
            raise TaskcutError(f"the model returns {len(output)} outputs but {len(task_names)} task names were given")
        return dict(zip(task_names, output))
    if isinstance(output, (list, tuple)):
        raise TaskcutError("the model returns a list/tuple: give its task names in order")
    raise TaskcutError(f"the model's output is a {type(output).__name__}, not keyed by task: "
                       "forward must return {task: tensor} (or a list/tuple with task names)")


def _reached(root: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) that `root` depends on through its autograd graph."""
    seen_nodes: set[int] = set()
    leaves: set[int] = set()
    stack = [root.grad_fn] if root.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return leaves


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block, the caller's mode after: reading a model must not move its
    BatchNorm running statistics or draw dropout masks."""
    mode = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(mode)


def decompose(model: nn.Module, example_input: torch.Tensor, task_names: Sequence[str] | None = None) -> Decomposition:
    """Map every parameter of `model` to the tasks whose output depends on it (one forward pass, eval mode)."""
    with torch.enable_grad(), evaluating(model):
        outputs = task_outputs(model(example_input), task_names)
    return decompose_outputs(model, outputs)


def decompose_outputs(model: nn.Module, outputs: Mapping[str, torch.Tensor]) -> Decomposition:
    """The same, from outputs already computed with grad enabled (saves a forward pass)."""
    by_id = {id(p): plain_name(name) for name, p in model.named_parameters() if p.requires_grad}
    users: dict[str, set[str]] = {name: set() for name in by_id.values()}
    for task, out in outputs.items():
        for leaf in _reached(out):
            if leaf in by_id:
                users[by_id[leaf]].add(task)
    return Decomposition(tuple(outputs), {n: frozenset(u) for n, u in users.items()})
