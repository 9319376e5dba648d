"""Channel-coupling graphs that never hang and never raise raw: torch-pruning's DependencyGraph, guarded.

torch-pruning traces a model and maps channel indices through every op. On encoders it was
not written for, two things go wrong: an op's index mapping cannot be inferred (a reshape
whose channel count comes out as zero, a split whose sizes it misreads) and the build raises
a raw exception; or the search for a group's coupled channels cycles through split/concat
ops and grows without end (FocalNet's focal modulation ran for minutes). Here an op whose
mapping fails is marked *opaque* instead, so every group that passes through it is left
whole; each group's search has a bound on its work; and any failure for one root layer
leaves that layer's group whole and listed, while the rest of the model is still pruned.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import TaskcutError

#: Group members one root layer may gather before its search is called runaway (a real group has tens
#: to hundreds), and the seconds its search may take.
MAX_GROUP_WORK = 2_000
ROOT_SECONDS = 2.0
#: Seconds the whole graph (tracing + every group) may take before structured pruning stops with an error.
GRAPH_SECONDS = 60.0


def torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError as exc:  # an optional dependency: only structured pruning needs it
        raise TaskcutError("structured pruning needs torch-pruning (pip install 'torch-pruning>=1.6,<1.7')") from exc
    return tp


class _Runaway(Exception):
    """One root's group search did more work than any real group needs."""


@dataclass
class Graph:
    """A built DependencyGraph, the ops whose index mapping could not be inferred, and the roots left whole."""

    graph: Any
    opaque: set[int] = field(default_factory=set)      # ids of graph nodes whose channel mapping is unknown
    left_whole: list[str] = field(default_factory=list)


def _guarded_mapping(opaque: set[int]):
    """torch-pruning's `update_index_mapping`, one op at a time: an op that fails is recorded, not raised."""
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping as im

    updates = {ops.OPTYPE.CONCAT: im.update_concat_index_mapping, ops.OPTYPE.SPLIT: im.update_split_index_mapping,
               ops.OPTYPE.RESHAPE: im.update_reshape_index_mapping, ops.OPTYPE.UNBIND: im.update_unbind_index_mapping,
               ops.OPTYPE.EXPAND: im.update_expand_index_mapping, ops.OPTYPE.SLICE: im.update_slice_index_mapping}

    def update(graph: Any) -> None:
        for node in graph.module2node.values():
            fn = updates.get(node.type)
            if fn is None:
                continue
            try:
                fn(graph, node)
            except Exception:  # noqa: BLE001 — any failure means: this op's channel mapping is unknown
                opaque.add(id(node))

    return update


@contextlib.contextmanager
def _patched(target: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(target, attr)
    setattr(target, attr, value)
    try:
        yield
    finally:
        setattr(target, attr, old)


def build(model: nn.Module, example: torch.Tensor, deadline: float) -> Graph:
    """Trace `model` on `example` into a dependency graph; a model that cannot be traced at all is a
    one-line error naming its class."""
    tp = torch_pruning()
    from torch_pruning.dependency import graph as graph_module

    opaque: set[int] = set()
    try:
        with _patched(graph_module.index_mapping, "update_index_mapping", _guarded_mapping(opaque)):
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except TaskcutError:
        raise
    except Exception as exc:
        raise TaskcutError(f"structured pruning cannot trace {type(model).__name__} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); prune it unstructured") from exc
    if time.monotonic() > deadline:
        raise TaskcutError(f"tracing {type(model).__name__} took longer than {GRAPH_SECONDS:.0f} s; prune it "
                           "unstructured")
    return Graph(graph, opaque)


@contextlib.contextmanager
def guarded(g: Graph) -> Iterator[None]:
    """Around any call that makes torch-pruning map indices again (every group search and cut does)."""
    from torch_pruning.dependency import graph as graph_module

    with _patched(graph_module.index_mapping, "update_index_mapping", _guarded_mapping(g.opaque)):
        yield


def groups(g: Graph, ignored: list[nn.Module], names: dict[nn.Module, str], deadline: float,
           failed: dict[str, str] | None = None,
           root_types: tuple[type, ...] = (nn.Conv2d, nn.Linear)) -> Iterator[Any]:
    """Every prunable group once (each conv/linear as root, as torch-pruning's `get_all_groups`), with
    a bounded search per root: a root whose search fails, runs away or crosses an opaque op is left
    whole (in `g.left_whole`) and the others are still yielded. Roots named in `failed` (root name ->
    why, filled here) are not searched again: a copy of the same model fails the same way. Past
    `deadline` it stops with an error."""
    failed = {} if failed is None else failed
    from torch_pruning.dependency.group import Group

    graph = g.graph
    ignored = list(ignored) + list(graph.IGNORED_LAYERS_IN_TRACING)
    visited: set[int] = set()
    work = [0]
    stop = [0.0]
    add_dep, has_op = Group.add_dep, Group.has_pruning_op

    def bounded_add(self: Any, dep: Any, idxs: Any) -> None:
        work[0] += 1
        if work[0] > MAX_GROUP_WORK or time.monotonic() > stop[0]:
            raise _Runaway
        add_dep(self, dep, idxs)

    def bounded_has(self: Any, dep: Any, idxs: Any) -> bool:
        if time.monotonic() > stop[0]:
            raise _Runaway
        return has_op(self, dep, idxs)

    with _patched(Group, "add_dep", bounded_add), _patched(Group, "has_pruning_op", bounded_has), guarded(g):
        for module in list(graph.module2node):
            if not isinstance(module, nn.Module):
                continue  # an op node (an add, a reshape): groups are rooted at layers
            if time.monotonic() > deadline:
                raise TaskcutError(f"finding the coupled channels took longer than {GRAPH_SECONDS:.0f} s "
                                   f"(at {names.get(module, type(module).__name__)}); prune it unstructured")
            if module in ignored or not isinstance(module, root_types) or id(module) in visited:
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            name = names.get(module, type(module).__name__)
            if name in failed:
                g.left_whole.append(f"{name} ({failed[name]})")
                continue
            work[0], stop[0] = 0, min(deadline, time.monotonic() + ROOT_SECONDS)
            try:
                group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                                list(range(pruner.get_out_channels(module))))
            except _Runaway:
                failed[name] = "its channels couple without end"
                g.left_whole.append(f"{name} ({failed[name]})")
                continue
            except Exception as exc:  # noqa: BLE001 — the library failed on this root: leave it whole, say why
                failed[name] = f"the channel search failed: {type(exc).__name__}"
                g.left_whole.append(f"{name} ({failed[name]})")
                continue
            prunable = True
            for dep, _ in group:
                if graph.is_out_channel_pruning_fn(dep.handler):
                    visited.add(id(dep.target.module))
                    if dep.target.module in ignored:
                        prunable = False
            if not prunable:
                continue
            if any(id(dep.target) in g.opaque for dep, _ in group):
                g.left_whole.append(f"{name} (coupled through an op whose channel layout is unknown)")
                continue
            yield group
