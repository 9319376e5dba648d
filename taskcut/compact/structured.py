"""Structured compaction: CUT at channel level, with whole channels physically removed.

torch-pruning's DependencyGraph finds the groups of coupled channels (a conv's outputs,
the BatchNorm after it, the inputs of every conv that reads them, across residual adds).
For each selected task a channel's importance is the sum of that task's CUT scores
|w * dL_t/dw| over every weight slice the channel couples. Per task, the channels are
ranked by importance normalised by the task's total; the keep sets are fused with the same
named rules as the unstructured path (counted among the tasks that use the group), and the
per-task keep ratio is found by bisection so the removed share of the model's parameters
matches the requested sparsity. The last conv of each head keeps its outputs; every group
keeps at least one channel. The result is a plain, smaller dense model.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..cut.decompose import evaluating
from .masking import remask_zeros, unmask
from ..errors import TaskcutError
from ..cut.fuse import Rule, check_sparsity, descending_ranks, parse_rule
from ..cut.score import Scores
from . import tracing
from ..hooks import forward_hooks

STRUCTURED_TOLERANCE = 0.01


@dataclass
class _Group:
    root: nn.Module
    root_fn: object
    channels: int
    scores: dict[str, torch.Tensor]          # task -> importance per channel (only tasks that use the group)
    heads: int = 1                           # > 1: the channels are an attention embedding of `heads` heads
    attention: nn.Module | None = None       # an attention module (not nn.MultiheadAttention) whose sizes follow
    name: str = ""                           # the root layer's name
    also: list[tuple[nn.Module, object]] = field(default_factory=list)  # more roots cut alike (q, k, v)

    def merge(self, other: "_Group") -> None:
        """Cut `other`'s root with the same channels as this one's; their scores add up."""
        self.also.append((other.root, other.root_fn))
        for task, s in other.scores.items():
            self.scores[task] = self.scores[task] + s if task in self.scores else s


def _attention_owners(model: nn.Module, example: torch.Tensor) -> dict[int, tuple[nn.Module, int]]:
    """Linear layers that compute queries, keys or values inside an attention module that is not
    `nn.MultiheadAttention` (a `transformers` one, a user's): found by the module's head count
    (`num_heads` / `num_attention_heads`). The output projection (the last linear the module runs)
    is not one: its outputs are the embedding, not a head layout."""
    owners: dict[int, tuple[nn.Module, int]] = {}
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            continue
        heads = head_count(module)
        if heads >= 1:  # one head too: its head size is an attribute the forward reshapes by
            for child in module.modules():
                if isinstance(child, nn.Linear):
                    owners[id(child)] = (module, heads)
    if not owners:
        return owners
    order: list[int] = []
    with forward_hooks([m for m in model.modules() if id(m) in owners], lambda mod, i, o: order.append(id(mod))), \
            torch.no_grad():
        model(example)
    last: dict[int, int] = {}
    for linear in order:
        last[id(owners[linear][0])] = linear
    for linear in last.values():
        if sum(1 for o in owners.values() if o[0] is owners[linear][0]) > 1:
            del owners[linear]
    return owners


def head_count(module: nn.Module) -> int:
    for attr in ("num_heads", "num_attention_heads"):
        value = vars(module).get(attr)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


@dataclass
class _Counter:
    """Exact parameter count after pruning: each parameter dim a group controls shrinks with its keep set."""

    fixed: int
    scaled: list[tuple[int, list[int]]]      # (numel, groups controlling its pruned dims)

    def count(self, kept: list[int], channels: list[int]) -> int:
        total = float(self.fixed)
        for numel, gs in self.scaled:
            f = float(numel)
            for g in gs:
                f *= kept[g] / channels[g]
            total += f
        return int(round(total))


def _idx(i: object) -> int:
    return int(getattr(i, "idx", i))


def _head_outputs(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The modules that produce each task's output: their output channels are the task's, never pruned."""
    producers: list[nn.Module] = []
    by_fn: dict[int, nn.Module] = {}
    alive: list[object] = []  # hold the graph nodes, so their ids stay theirs during the walk

    def remember(mod: nn.Module, inp: object, out: torch.Tensor) -> None:
        alive.append(out.grad_fn)
        by_fn[id(out.grad_fn)] = mod

    with forward_hooks([m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))], remember):
        outputs = model(example)
    for out in outputs.values():
        stack, seen = [out.grad_fn], set()
        while stack:  # walk back through sums/activations to the convs that write the output
            fn = stack.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            if id(fn) in by_fn:
                producers.append(by_fn[id(fn)])
                continue
            stack.extend(n for n, _ in fn.next_functions)
    return producers


def _unsafe(graph: Any, group: Any, channels: int, unwrapped: dict[int, int]) -> str | None:
    """Why cutting this group's channels could break the forward or scramble what it computes, or None."""
    for dep, idxs in group:
        module = dep.target.module
        if len(idxs) != channels:
            return "couples to its channels other than one to one"  # a reshape into heads, say
        if isinstance(module, nn.Module):
            pruner = graph.get_pruner_of_module(module)
            size = None if pruner is None else (
                pruner.get_out_channels(module) if graph.is_out_channel_pruning_fn(dep.handler)
                else pruner.get_in_channels(module))
            if size is not None and max(_idx(i) for i in idxs) >= size:
                return "maps onto a layer of another width"  # a flatten or reshape between them
        if isinstance(module, nn.Parameter):
            dim = unwrapped.get(id(module))
            if dim is None or module.shape[dim] != channels:
                return "couples to a parameter of another size"  # a relative-position bias table per head
        elif isinstance(module, nn.Conv2d) and 1 < module.groups and not (
                module.groups == module.in_channels == module.out_channels):
            return "feeds a grouped convolution"  # channels must go by whole groups
    return None


@dataclass
class _Search:
    """What every trace of one structured pruning shares: its input, the scores, the time left, the
    roots a trial cut found breaking (`skip`) and the roots whose channel search failed (`failed`)."""

    example: torch.Tensor
    scores: Scores
    deadline: float
    skip: frozenset[str] = frozenset()
    failed: dict[str, str] = field(default_factory=dict)
    ties: tuple[frozenset[str], ...] = ()
    widths: dict[str, int] = field(default_factory=dict)  # broken root -> its channel count
    start: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        """A progress line, once the work has taken long enough to wonder about (`PROGRESS_AFTER_S`)."""
        elapsed = time.monotonic() - self.start
        if elapsed >= PROGRESS_AFTER_S:
            from ..progress import console

            console.print(f"structured: {text} ({elapsed:.1f} s elapsed, at most {tracing.GRAPH_SECONDS:.0f} s)",
                          highlight=False, soft_wrap=True)


#: Seconds after which structured pruning says what it is doing.
PROGRESS_AFTER_S = 2.0


def _tie(groups: list[_Group], controls: dict[str, list[int]],
         ties: tuple[frozenset[str], ...]) -> tuple[list[_Group], dict[str, list[int]]]:
    """Merge each set of tied groups into its first: one keep set cut from all their roots (a block
    whose forward reshapes its attention output to its input's width ties the two widths)."""
    if not ties:
        return groups, controls
    index = {g.name: i for i, g in enumerate(groups)}
    into = list(range(len(groups)))
    for tie in ties:
        members = sorted(index[n] for n in tie if n in index)
        if len(members) < 2:
            continue
        first = groups[members[0]]
        heads = max(groups[i].heads for i in members)
        for i in members:
            g = groups[i]
            if g.heads != heads:  # a plain group cut with a head layout: its scores summed per head dim
                g.scores = {t: v.view(heads // g.heads, -1).sum(0) for t, v in g.scores.items()}
            g.heads = heads
        for i in members[1:]:
            first.merge(groups[i])
            first.attention = first.attention or groups[i].attention
            into[i] = members[0]
    kept = sorted(set(into))
    position = {old: new for new, old in enumerate(kept)}
    merged = {key: [position[into[g]] for g in gs] for key, gs in controls.items()}
    return [groups[i] for i in kept], merged


def _groups(model: nn.Module, search: _Search):
    example, scores, skip = search.example, search.scores, search.skip
    tp = tracing.torch_pruning()
    names = {m: n for n, m in model.named_modules()}
    param_names = {id(p): n for n, p in model.named_parameters()}
    owners = _attention_owners(model, example)
    ignored = _head_outputs(model, example)
    traced = tracing.build(model, example, search.deadline)
    graph = traced.graph
    unwrapped = {id(p): dim for p, dim in graph.unwrapped_parameters}
    out_fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    in_fns = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
    groups: list[_Group] = []
    controls: dict[str, list[int]] = {}
    exact = True  # False: the group holds layers whose parameter count the counter only estimates
    left_whole = traced.left_whole
    for group in tracing.groups(traced, ignored, names, search.deadline, search.failed):
        root_dep, root_idxs = group[0]
        channels = len(root_idxs)
        root_name = names.get(root_dep.target.module, str(root_dep.target))
        why = "it broke the forward when cut" if root_name in skip else _unsafe(graph, group, channels, unwrapped)
        if why is not None:
            # cutting these channels could break the forward or scramble what it computes: left whole
            left_whole.append(f"{root_name} ({why})")
            continue
        per_task: dict[str, torch.Tensor] = {}
        seen: set[tuple[int, object]] = set()
        mine: dict[str, int] = {}  # parameter -> how many of its dims this group cuts
        heads, attention = 1, None
        handled: set[str] = set()  # parameters counted through their nn.MultiheadAttention
        for dep, idxs in group:
            module, fn = dep.target.module, dep.pruning_fn
            if (id(module), fn) in seen:  # residual groups list some layers more than once
                continue
            seen.add((id(module), fn))
            idx = torch.tensor([_idx(i) for i in idxs])
            exact = exact and isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm))
            if isinstance(module, nn.Parameter):  # a bare parameter (a position embedding): its last dim
                key = param_names.get(id(module))
                if key is not None:
                    mine[key] = 1
                continue
            if isinstance(module, nn.MultiheadAttention) and channels == module.embed_dim:
                heads = module.num_heads  # the embedding is cut the same way in every head
                base = names[module]
                for pname, param in [*module.named_parameters(recurse=False),
                                     *((f"out_proj.{n}", p) for n, p in module.out_proj.named_parameters())]:
                    key = f"{base}.{pname}"  # the embedding is both dims of the square weights
                    mine[key] = param.dim()
                    handled.add(key)
            if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
                heads = math.lcm(heads, module.num_groups)  # cut alike in every group: each keeps its share
            prunes_inputs = fn in in_fns  # tuple membership compares with ==, as torch-pruning asks
            if id(module) in owners and fn in out_fns and channels % owners[id(module)][1] == 0:
                attention, heads = owners[id(module)]  # queries, keys or values: same dims in every head
            for pname, param in module.named_parameters(recurse=False):
                if fn in out_fns or (not prunes_inputs and param.dim() == 1):
                    dim = 0  # a layer's outputs, or a norm's per-channel vectors
                elif prunes_inputs and param.dim() > 1:
                    dim = 1
                else:
                    continue
                key = f"{names[module]}.{pname}"
                if key not in handled:
                    mine[key] = 1
                if pname != "weight" or param.dim() < 2:
                    continue
                for task, per_param in scores.items():
                    s = per_param.get(f"{names[module]}.weight")
                    if s is None:
                        continue
                    reduce = [d for d in range(s.dim()) if d != dim]
                    contribution = s.sum(dim=reduce).index_select(0, idx)
                    per_task[task] = per_task.get(task, torch.zeros(channels, dtype=torch.float64)) + contribution.double()
        if channels % heads:  # a GroupNorm's groups and the heads do not tile the channels alike
            left_whole.append(f"{root_name} (its channels split into {heads} groups unevenly)")
            continue
        if heads > 1:  # one score per dimension within a head, summed over the heads
            per_task = {task: s.view(heads, channels // heads).sum(0) for task, s in per_task.items()}
        new = _Group(root_dep.target.module, root_dep.pruning_fn, channels, per_task, heads, attention, root_name)
        same = next((i for i, g in enumerate(groups) if attention is not None and g.attention is attention
                     and (g.channels, g.heads) == (channels, heads)), None)
        if same is None:
            same = len(groups)
            groups.append(new)
        else:
            # queries, keys and values of one attention module: the same dims of every head go from all
            # of them, so the module's one head size stays true for each
            groups[same].merge(new)
        for key, times in mine.items():
            owned = controls.setdefault(key, [])
            if same not in owned:
                owned.extend([same] * times)
    groups, controls = _tie(groups, controls, search.ties)
    params = dict(model.named_parameters())
    counter = _Counter(sum(p.numel() for n, p in params.items() if n not in controls),
                       [(params[n].numel(), gs) for n, gs in controls.items()])
    return traced, groups, counter, exact and not owners, left_whole


def _keep_sets(groups: list[_Group], rule: Rule, r: float, ranks: dict[str, list[torch.Tensor]],
               sizes: dict[str, int], round_to: int = 1) -> list[torch.Tensor]:
    k = {t: int(round(r * n)) for t, n in sizes.items()}
    keeps = []
    for gi, g in enumerate(groups):
        users = [t for t in g.scores]
        if not users:
            keeps.append(torch.ones(g.channels, dtype=torch.bool))
            continue
        channels = g.channels // g.heads  # per head, for an attention embedding
        votes = sum((ranks[t][gi] < k[t]).to(torch.int16) for t in users)
        need = 1 if len(users) == 1 else rule.threshold(len(users))
        keep = votes >= need
        wanted = max(1, int(keep.sum()))  # never remove a whole layer
        granule = rounding(channels, round_to) if g.heads == 1 else 1
        if granule > 1:
            # CPU kernels run channel counts in multiples of their vector width much faster than
            # ragged ones: round the kept count up, adding the next channels by vote, then score.
            wanted = min(g.channels, -(-wanted // granule) * granule)
        if wanted != int(keep.sum()):
            total = sum(g.scores[t] / g.scores[t].sum().clamp(min=1e-30) for t in users)
            priority = votes.double() + 0.5 * total / total.max().clamp(min=1e-30)
            keep = torch.zeros(channels, dtype=torch.bool)
            keep[torch.argsort(priority, descending=True, stable=True)[:wanted]] = True
        keeps.append(keep.repeat(g.heads))  # channel h * head_dim + j is dimension j of head h
    return keeps


def rounding(channels: int, round_to: int) -> int:
    """The multiple a group of `channels` keeps: `round_to` from 4 x `round_to` channels up; a step wider
    than 8 (a runtime's measured one) keeps narrower groups at the next step down, to 8, as before
    steps were measured; 1 (single channels) below."""
    if round_to > 1 and channels >= 4 * round_to:
        return round_to
    if round_to > DEFAULT_ROUND_TO:
        return rounding(channels, max(DEFAULT_ROUND_TO, round_to // 2))
    return 1


#: Channels kept in multiples of this in wide layers when the caller does not say (fast on CPUs).
DEFAULT_ROUND_TO = 8


def check_reached(result: dict[str, Any], sparsity: float) -> None:
    """Say how the sparsity was reached (a rounding fallback), or refuse in one line when it was not."""
    if result.get("note"):
        from ..progress import console

        console.print(f"structured: {result['note']}", highlight=False, soft_wrap=True)
    if abs(result["sparsity"] - sparsity) > STRUCTURED_TOLERANCE:
        how = ("even keeping single channels" if result.get("round_to", 1) == 1 else
               f"keeping multiples of {result['round_to']} channels (round_to=1 allows finer steps)")
        raise TaskcutError(f"structured pruning reached {result['sparsity']:.4f} of the parameters removed, not "
                           f"{sparsity} within {STRUCTURED_TOLERANCE}, {how}: the model has too few prunable "
                           "channels for that; nothing written")


def structured_prune(model: nn.Module, example: torch.Tensor, scores: Scores, sparsity: float,
                     rule: str = "vote", round_to: int | None = None) -> dict[str, Any]:
    """Remove channels of `model` in place; returns the achieved figures (see `_structured_prune`).
    Whatever fails inside torch-pruning or the model's own code is a one-line `TaskcutError`
    naming the model, never a raw exception."""
    try:
        return _structured_prune(model, example, scores, sparsity, rule, round_to)
    except TaskcutError:
        raise
    except Exception as exc:
        raise TaskcutError(f"structured pruning failed on {type(model).__name__} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); prune it unstructured or "
                           "report the model") from exc


def _structured_prune(model: nn.Module, example: torch.Tensor, scores: Scores, sparsity: float,
                     rule: str = "vote", round_to: int | None = None) -> dict[str, Any]:
    """Remove channels of `model` in place; returns the achieved figures.

    A masked model (a compact file, an imported pruned checkpoint) keeps its zeros as masks.
    Groups whose layers couple to the channels other than one to one are left whole and
    listed under `left_whole`; a result that no longer runs is an error, never returned.
    Groups of at least 4 x `round_to` channels keep a multiple of `round_to` channels, and with
    a `round_to` above 8 narrower groups of 32 or more a multiple of 8 (`rounding`; 1 turns this
    off): the same parameter budget then runs markedly faster on CPUs. When the
    caller leaves `round_to` unset (8) and the sparsity is out of reach at that rounding (a
    small model whose few wide layers move in big steps), single channels are used instead,
    and the result says so (`round_to`, `note`).
    """
    check_sparsity(sparsity)
    parsed = parse_rule(rule, len(scores))
    if parsed.name == "score-sum":
        raise TaskcutError("score-sum is not available for structured pruning; use vote, majority, union or intersection")
    masked = list(unmask(model))  # torch-pruning edits plain weights; masks come back from the zeros after
    search = _Search(example, scores, time.monotonic() + tracing.GRAPH_SECONDS)
    with torch.no_grad(), evaluating(model):
        shapes = _output_shapes(model, example)
    auto = round_to is None
    total = sum(p.numel() for p in model.parameters())
    target = sparsity * total
    optimistic = True
    for _ in range(MAX_REPLANS + 1):
        plan = _Plan(model, search, parsed, DEFAULT_ROUND_TO if auto else round_to)
        predicted, keeps = plan.closest(target)
        note = None
        if auto and plan.round_to > 1 and abs(predicted - target) > STRUCTURED_TOLERANCE * total:
            coarse = predicted
            plan.round_to = 1
            predicted, keeps = plan.closest(target)
            note = (f"a sparsity of {sparsity} is out of reach keeping multiples of {DEFAULT_ROUND_TO} channels "
                    f"({coarse / total:.4f} at best): single channels were kept instead (slower on CPUs than "
                    f"multiples of {DEFAULT_ROUND_TO})")
        if optimistic and plan.exact:
            # convolutions and norms only (the zoo, most CNNs): cut the model itself, as fast as a plain
            # cut; only if that breaks the forward is it put back and the cut tried group by group
            optimistic = False
            backup = copy.deepcopy(model)
            if _cut_runs(plan, keeps, model, example, shapes):
                remask_zeros(model, masked)
                after = sum(p.numel() for p in model.parameters())
                return {"parameters_before": total, "parameters_after": after, "sparsity": 1.0 - after / total,
                        "left_whole": plan.left_whole, "round_to": plan.round_to, "note": note}
            model.__dict__.clear()  # every module's state lives in its __dict__: this puts it all back
            model.__dict__.update(backup.__dict__)
            continue
        trial = _trial(model, search, keeps, None, shapes)
        if trial is not None:
            break
        search.say(f"a trial cut of {len(plan.groups)} channel groups broke the forward; finding which")
        broken = _breaking(model, search, keeps, shapes, plan.groups)
        broken = broken.union(*(tie for tie in search.ties if tie & broken))  # a tied group goes whole together
        search.say(f"planning again without {len(broken)} group(s): {', '.join(sorted(broken))}")
        search.widths.update({g.name: g.channels for g in plan.groups if g.name in broken})
        search.skip = search.skip | broken
        tied = _find_ties(model, search, plan, target, shapes)
        search.ties = search.ties + tied
        # leave the others whole and plan again: the rest of the model takes up the cut
        search.skip = search.skip - frozenset().union(*tied)
    else:
        raise TaskcutError(f"structured pruning could not find channels of {type(model).__name__} that cut "
                           "safely; prune it unstructured")
    for _ in range(3 if not plan.exact else 0):
        # attention and bare parameters make the count an estimate: the trial copy measures it; correct
        actual = total - sum(p.numel() for p in trial.parameters())
        if abs(actual - target) <= 0.25 * STRUCTURED_TOLERANCE * total or actual <= 0:
            break
        corrected = plan.closest(target * max(predicted, 1) / actual)
        again = _trial(model, search, corrected[1], None, shapes)
        if again is None:
            break  # a correction that would break the forward is not taken
        (predicted, keeps), trial = corrected, again
    _cut(plan.traced, plan.groups, keeps)
    remask_zeros(model, masked)
    _check_runs(model, example, shapes)
    after = sum(p.numel() for p in model.parameters())
    achieved = 1.0 - after / total
    return {"parameters_before": total, "parameters_after": after, "sparsity": achieved,
            "left_whole": plan.left_whole, "round_to": plan.round_to, "note": note}


#: Times the plan is made again after a trial cut found groups that break the forward.
MAX_REPLANS = 4


def _cut_runs(plan: "_Plan", keeps: list[torch.Tensor], model: nn.Module, example: torch.Tensor,
              shapes: dict[str, tuple[int, ...]]) -> bool:
    """Cut `model` by the plan; whether it still runs with the same output shapes."""
    try:
        _cut(plan.traced, plan.groups, keeps)
        with torch.no_grad(), evaluating(model):
            return _output_shapes(model, example) == shapes
    except TaskcutError:
        raise
    except Exception:  # noqa: BLE001 — the cut or the forward failed: the careful path takes over
        return False


class _Plan:
    """The coupled channel groups of a model, ranked per task, and the keep sets for a target count."""

    def __init__(self, model: nn.Module, search: _Search, rule: Rule, round_to: int) -> None:
        scores = search.scores
        with evaluating(model):  # tracing runs forwards: BatchNorm statistics must not move
            self.traced, self.groups, self.counter, self.exact, self.left_whole = _groups(model, search)
        self.rule, self.round_to = rule, round_to
        self.channels = [g.channels for g in self.groups]
        self.total = sum(p.numel() for p in model.parameters())
        self.ranks: dict[str, list[torch.Tensor]] = {}
        self.sizes: dict[str, int] = {}
        for task in scores:
            parts = [g.scores.get(task) for g in self.groups]
            present = [p for p in parts if p is not None]
            flat = torch.cat(present) if present else torch.zeros(0, dtype=torch.float64)
            flat = flat / flat.sum().clamp(min=1e-30)
            rank = descending_ranks(flat)
            self.sizes[task] = len(rank)
            self.ranks[task], start = [], 0
            for p in parts:
                if p is None:
                    self.ranks[task].append(torch.empty(0, dtype=torch.int64))
                else:
                    self.ranks[task].append(rank[start:start + len(p)])
                    start += len(p)

    def removed(self, r: float) -> tuple[int, list[torch.Tensor]]:
        keeps = _keep_sets(self.groups, self.rule, r, self.ranks, self.sizes, self.round_to)
        return self.total - self.counter.count([int(k.sum()) for k in keeps], self.channels), keeps

    def closest(self, target: float) -> tuple[int, list[torch.Tensor]]:
        """The keep sets whose predicted removed count is nearest `target`: bisection on the keep ratio,
        then, when its steps are too coarse to land within the tolerance (a few wide attention groups
        move a small model in big steps), single channels of the lowest priority are removed on top of
        the nearest set below the target."""
        lo, hi = 0.0, 1.0
        best = below = self.removed(1.0)
        above = self.removed(0.0)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            cur = self.removed(mid)
            if abs(cur[0] - target) < abs(best[0] - target):
                best = cur
            if below[0] < cur[0] <= target:
                below = cur
            if target < cur[0] < above[0]:
                above = cur
            if cur[0] > target:
                lo = mid
            else:
                hi = mid
        if abs(best[0] - target) <= STRUCTURED_TOLERANCE * self.total or self.round_to > 1:
            # within the tolerance, or rounding to wide steps (the caller falls back to single channels,
            # or a budget search measures what it gets): the ranking's own cut, as before fills existed
            return best
        options = [best, self._fill(below[1], target)]
        if above[0] > target:
            options.append(self._restore(above[1], target))
        return min(options, key=lambda o: abs(o[0] - target))

    def _priority(self, g: _Group) -> torch.Tensor:
        return sum(s / s.sum().clamp(min=1e-30) for s in g.scores.values())

    def _fine(self, g: _Group) -> bool:
        """A group that may move one channel at a time: no heads, narrower than the rounding applies to."""
        return g.heads == 1 and bool(g.scores) and rounding(g.channels, self.round_to) == 1

    def _restore(self, keeps: list[torch.Tensor], target: float) -> tuple[int, list[torch.Tensor]]:
        """From a set that removes too much, give back removed channels, highest priority first, while
        each brings the count nearer `target`."""
        out = [k.clone() for k in keeps]
        count = self.total - self.counter.count([int(k.sum()) for k in out], self.channels)
        candidates = []
        for gi, g in enumerate(self.groups):
            if self._fine(g):
                priority = self._priority(g)
                candidates.extend((float(priority[c]), gi, int(c)) for c in torch.nonzero(~out[gi]).flatten())
        candidates.sort(key=lambda c: -c[0])
        return self._step(out, count, candidates, True, target)

    def _step(self, out: list[torch.Tensor], count: int, candidates: list[tuple[float, int, int]], keep: bool,
              target: float) -> tuple[int, list[torch.Tensor]]:
        """Set each candidate channel's keep flag to `keep`, in order, only where that brings the removed
        count nearer `target` (at most 2000 tries); stop within a quarter of the tolerance."""
        for _, gi, c in candidates[:2000]:
            if abs(count - target) <= 0.25 * STRUCTURED_TOLERANCE * self.total:
                break
            out[gi][c] = keep
            trial = self.total - self.counter.count([int(k.sum()) for k in out], self.channels)
            if abs(trial - target) < abs(count - target):
                count = trial
            else:
                out[gi][c] = not keep
        return count, out

    def _fill(self, keeps: list[torch.Tensor], target: float) -> tuple[int, list[torch.Tensor]]:
        """Remove further channels, lowest fused priority first, from groups that move one channel at a
        time (no heads, below the rounding width), until the removed count is nearest `target`."""
        candidates: list[tuple[float, int, int]] = []
        for gi, (g, keep) in enumerate(zip(self.groups, keeps)):
            if not self._fine(g):
                continue
            total = self._priority(g)
            kept = torch.nonzero(keep).flatten()
            order = kept[torch.argsort(total[kept], stable=True)][:-1]  # never the group's last channel
            candidates.extend((float(total[c]), gi, int(c)) for c in order)
        candidates.sort(key=lambda c: c[0])

        def dropped(k: int) -> tuple[int, list[torch.Tensor]]:
            out = [k_.clone() for k_ in keeps]
            for _, gi, c in candidates[:k]:
                out[gi][c] = False
            return self.total - self.counter.count([int(k_.sum()) for k_ in out], self.channels), out

        lo, hi = 0, len(candidates)
        while lo < hi:  # the fewest extra channels whose removal reaches the target
            mid = (lo + hi) // 2
            if dropped(mid)[0] >= target:
                hi = mid
            else:
                lo = mid + 1
        best = min((dropped(k) for k in {max(lo - 1, 0), lo}), key=lambda o: abs(o[0] - target))
        if lo == 0:
            return best
        # the channel that crosses the target may be a wide one: from just below, take further
        # channels (by priority) only while each brings the count nearer the target
        count, out = dropped(lo - 1)
        stepped = self._step(out, count, candidates[lo:], False, target)
        return min([best, stepped], key=lambda o: abs(o[0] - target))


def _output_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    from ..cut.decompose import task_outputs

    return {t: tuple(v.shape) for t, v in task_outputs(model(example)).items()}


def _trial(model: nn.Module, search: _Search, keeps: list[torch.Tensor], subset: set[int] | None = None,
           shapes: dict[str, tuple[int, ...]] | None = None) -> nn.Module | None:
    """A pruned copy of `model` (only the groups in `subset`, or all), or None when cutting them breaks
    the forward or changes an output's shape."""
    trial = copy.deepcopy(model)
    with evaluating(trial):
        traced, groups, *_ = _groups(trial, search)
    chosen = [k if subset is None or i in subset else torch.ones_like(k) for i, k in enumerate(keeps)]
    try:
        _cut(traced, groups, chosen)
        with torch.no_grad(), evaluating(trial):
            got = _output_shapes(trial, search.example)
    except TaskcutError:
        raise
    except Exception:  # noqa: BLE001 — the cut or the forward failed: these groups do not cut safely
        return None
    if shapes is not None and got != shapes:
        return None
    return trial


def _find_ties(model: nn.Module, search: _Search, plan: "_Plan", target: float,
               shapes: dict[str, tuple[int, ...]]) -> tuple[frozenset[str], ...]:
    """Groups that break the forward when cut alone but run when cut alike: the broken groups of one width
    (found in this round or an earlier one), cut with one keep set, tried per width at the target."""
    widths: dict[int, set[str]] = {}
    for name, channels in search.widths.items():
        if name in search.skip:
            widths.setdefault(channels, set()).add(name)
    found: list[frozenset[str]] = []
    for names in widths.values():
        if len(names) < 2:
            continue
        tie = frozenset(names)
        if tie in search.ties:  # tied once and still broke the forward with the rest: it stays whole
            continue
        trial_search = _Search(search.example, search.scores, search.deadline, search.skip - tie, search.failed,
                               search.ties + (tie,))
        trial_plan = _Plan(model, trial_search, plan.rule, plan.round_to)
        keeps = trial_plan.closest(target)[1]
        at = next((i for i, g in enumerate(trial_plan.groups) if g.name in tie), None)
        if at is not None and _trial(model, trial_search, keeps, {at}, shapes) is not None:
            found.append(tie)
    return tuple(found)


def _breaking(model: nn.Module, search: _Search, keeps: list[torch.Tensor], shapes: dict[str, tuple[int, ...]],
              groups: list[_Group]) -> frozenset[str]:
    """The root names of the groups whose cut breaks the forward (found by halving the set of cut groups;
    the caller has seen the cut of all of them fail)."""
    cut = [i for i, k in enumerate(keeps) if not bool(k.all())]
    if not cut:
        return frozenset()
    broken: set[int] = set()
    pending = [cut]
    while pending:
        part = pending.pop()
        if len(part) == 1:
            broken.update(part)
            continue
        halves = [part[: len(part) // 2], part[len(part) // 2:]]
        failing = [h for h in halves if _trial(model, search, keeps, set(h), shapes) is None]
        if not failing:  # only together do they break it: leave them all whole
            broken.update(part)
        pending.extend(failing)
    return frozenset(groups[i].name for i in broken)


def _cut(traced: tracing.Graph, groups: list[_Group], keeps: list[torch.Tensor]) -> None:
    """Remove every channel outside its group's keep set (and follow with attention sizes)."""
    for g, keep in zip(groups, keeps):
        drop = torch.nonzero(~keep).flatten().tolist()
        if drop:
            with tracing.guarded(traced):
                for root, fn in [(g.root, g.root_fn), *g.also]:
                    traced.graph.get_pruning_group(root, fn, idxs=drop).prune()
            if g.attention is not None:
                _resize_attention(g.attention, g.heads, g.channels, int(keep.sum()))


def _resize_attention(module: nn.Module, heads: int, before: int, after: int) -> None:
    """Bring an attention module's own sizes to its narrower projections: the head dimension
    (`before // heads` -> `after // heads`) and the total (`before` -> `after`), wherever the
    module keeps them as integers; the head count stays."""
    for attr, value in list(vars(module).items()):
        if attr in ("num_heads", "num_attention_heads") or isinstance(value, bool) or not isinstance(value, int):
            continue
        if value == before // heads:
            setattr(module, attr, after // heads)
        elif value == before:
            setattr(module, attr, after)


def _check_runs(model: nn.Module, example: torch.Tensor, shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """Never hand back a model that no longer runs or whose outputs changed shape."""
    try:
        with torch.no_grad(), evaluating(model):
            got = _output_shapes(model, example)
        if shapes is not None and got != shapes:
            raise ValueError(f"its outputs changed shape: {got} instead of {shapes}")
    except Exception as exc:
        raise TaskcutError(f"structured pruning left {type(model).__name__} unable to run ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); prune it unstructured or "
                           "report the layer") from exc


def reshape_like(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Rebuild the convs, linears and BatchNorms of a freshly built `model` at the recorded shapes."""
    for name, module in list(model.named_modules()):
        weight = shapes.get(f"{name}.weight")
        if weight is None:
            continue
        if isinstance(module, nn.Conv2d) and list(module.weight.shape) != weight:
            new = nn.Conv2d(weight[1] * module.groups, weight[0], module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d) and module.num_features != weight[0]:
            new = nn.BatchNorm2d(weight[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        elif isinstance(module, nn.Linear) and list(module.weight.shape) != weight:
            new = nn.Linear(weight[1], weight[0], module.bias is not None)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model
