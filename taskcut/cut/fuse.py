"""From per-task scores to one keep-mask per weight, at exactly the requested sparsity.

Each selected task t keeps the top-k of its normalised scores (score / t's total) over the
weights it depends on: the shared ones and its own head. Shared weights are then fused by a
named rule, counted per element among the tasks that actually use that element (n_p of
them): a conv whose output rows the forward slices into tasks gives each row to its task.

* `vote` (default): keep where at least min(2, n_p) tasks keep. CUT's rule for two or more
  tasks; with one task it keeps that task's choice instead of pruning the whole trunk.
* `vote:K`: at least min(K, n_p) tasks keep.   * `majority`: more than half of n_p keep.
* `union` (DiSparse): any task keeps.          * `intersection`: every task keeps.
* `score-sum`: top-k of the summed normalised scores over the shared weights.

Head weights take their own task's mask. The per-task keep ratio r is found by bisection
so that the zeroed fraction of all weights in scope equals the requested sparsity: every
rule is monotone in r, so no lookup table is needed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

import torch

from ..errors import TaskcutError

RULES = ("vote", "vote:K", "majority", "union", "intersection", "score-sum")
TOLERANCE = 1e-3


@dataclass(frozen=True)
class Rule:
    name: str
    k: int = 0

    def threshold(self, users: int) -> int:
        """Votes needed for a weight used by `users` tasks."""
        if self.name == "vote":
            return min(self.k or 2, users)
        if self.name == "majority":
            return users // 2 + 1
        if self.name == "union":
            return 1
        if self.name == "intersection":
            return users
        raise AssertionError(self.name)

    def thresholds(self, users: torch.Tensor) -> torch.Tensor:
        """`threshold` for every element at once, from each element's count of users."""
        if self.name == "vote":
            return users.clamp(max=self.k or 2)
        if self.name == "majority":
            return users // 2 + 1
        if self.name == "union":
            return torch.ones_like(users)
        if self.name == "intersection":
            return users
        raise AssertionError(self.name)


def parse_rule(text: str, n_tasks: int) -> Rule:
    """A validated fusion rule for `n_tasks` selected tasks."""
    name, _, arg = text.partition(":")
    if name == "vote" and arg:
        try:
            k = int(arg)
        except ValueError:
            raise TaskcutError(f"fusion rule {text!r}: K must be an integer") from None
        if not 1 <= k <= n_tasks:
            raise TaskcutError(f"fusion rule {text!r}: K must be between 1 and the {n_tasks} selected task(s)")
        return Rule("vote", k)
    if arg or name not in ("vote", "majority", "union", "intersection", "score-sum"):
        raise TaskcutError(f"unknown fusion rule {text!r}; rules: {', '.join(RULES)}")
    return Rule(name)


def check_sparsity(sparsity: float) -> float:
    if not (0.0 <= sparsity < 1.0) or math.isnan(sparsity):
        raise TaskcutError(f"sparsity must be in [0, 1), got {sparsity}")
    return sparsity


@dataclass
class Fusion:
    masks: dict[str, torch.Tensor]           # True = keep
    keep_ratio: float                        # the per-task keep ratio bisection found
    sparsity: float                          # achieved, over all weights in scope
    per_layer: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.masks.values())


def descending_ranks(values: torch.Tensor) -> torch.Tensor:
    """Each entry's rank, 0 for the largest; ties keep their order, so ranks are deterministic."""
    order = torch.argsort(values, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank


#: Recently ranked tasks: (their score tensors, held so their ids stay theirs) -> (normalised, ranks). A fleet
#: prunes many devices from one scores file, and a budget search fuses one selection many times: each task's
#: scores are sorted once, not once per device and trial.
_RANKED: "OrderedDict[tuple, tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]]" = OrderedDict()
_RANKED_MAX_ELEMENTS = 16_000_000  # about 400 MB with the scores held: full-size models are not cached


def _no_scores(task: str, per_param: Mapping[str, torch.Tensor], total: float) -> str:
    """Say where the task's gradient dies: the weights are in model order, so the last one with no score
    is the layer nearest the task's output, the first that saw no gradient or only zero inputs."""
    if not math.isfinite(total):
        return f"task {task!r} has importance scores that are not finite (total {total}); check its data and loss"
    last = next(reversed(list(per_param)), None)
    where = f": the gradient dies at {last.rpartition('.')[0] or last}, the layer nearest its output (its " \
        "inputs are all zero, or the loss sends it no gradient)" if last else ""
    return f"task {task!r} has no positive importance scores (total {total}){where}; check its data and the " \
        "layers that feed it"


def _task_ranks(task: str, per_param: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A task's scores over its weights, normalised by their total, and each one's descending rank."""
    key = (task, tuple((n, id(s)) for n, s in per_param.items()))
    hit = _RANKED.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], per_param.values())):
        _RANKED.move_to_end(key)
        return hit[1], hit[2]
    flat = torch.cat([s.reshape(-1).double() for s in per_param.values()])
    total = float(flat.sum())
    if total <= 0 or not math.isfinite(total):
        raise TaskcutError(_no_scores(task, per_param, total))
    flat = flat / total
    rank = descending_ranks(flat)
    if len(rank) <= _RANKED_MAX_ELEMENTS:
        _RANKED[key] = (tuple(per_param.values()), flat, rank)
        while sum(len(v[2]) for v in _RANKED.values()) > _RANKED_MAX_ELEMENTS:
            _RANKED.popitem(last=False)
    return flat, rank


class _Ranks:
    """Per task, each weight's rank (0 = most important) among the weights that task depends on."""

    def __init__(self, scores: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        self.tasks = list(scores)
        self.names = list(dict.fromkeys(n for t in scores.values() for n in t))
        self.shapes = {n: next(scores[t][n] for t in scores if n in scores[t]).shape for n in self.names}
        self.users = {n: [t for t in self.tasks if n in scores[t]] for n in self.names}
        self.rank: dict[str, dict[str, torch.Tensor]] = {}
        self.size: dict[str, int] = {}
        self.normalised: dict[str, dict[str, torch.Tensor]] = {}
        for t, per_param in scores.items():
            flat, rank = _task_ranks(t, per_param)
            self.size[t] = len(rank)
            self.rank[t], self.normalised[t] = {}, {}
            start = 0
            for n, s in per_param.items():
                self.rank[t][n] = rank[start:start + s.numel()].view(s.shape)
                self.normalised[t][n] = flat[start:start + s.numel()].view(s.shape)
                start += s.numel()

    def shared(self) -> list[str]:
        return [n for n in self.names if len(self.users[n]) >= 2]

    def element_users(self, n: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Which of a shared tensor's users use each element, and how many do.

        A task uses an element when its score there is positive (its loss has a gradient
        through it). Rows of a conv whose output the forward slices into tasks score exactly
        zero for every task but their own, so each row belongs to its task alone. Elements no
        task scores (exact zeros, dead units) count every user of the tensor, as before.
        """
        users = self.users[n]
        used = {t: self.normalised[t][n] > 0 for t in users}
        count = sum(u.to(torch.int16) for u in used.values())
        nobody = count == 0
        if bool(nobody.any()):
            used = {t: u | nobody for t, u in used.items()}
            count = torch.where(nobody, torch.full_like(count, len(users)), count)
        return used, count


def _masks_at(ranks: _Ranks, rule: Rule, r: float, sum_rank: dict[str, torch.Tensor] | None,
              n_shared: int, fixed: Mapping[str, torch.Tensor],
              element_users: Mapping[str, tuple[dict[str, torch.Tensor], torch.Tensor]]) -> dict[str, torch.Tensor]:
    k = {t: int(round(r * ranks.size[t])) for t in ranks.tasks}
    out = {}
    for n in ranks.names:
        users = ranks.users[n]
        if len(users) == 1:
            out[n] = ranks.rank[users[0]][n] < k[users[0]]
        elif rule.name == "score-sum":
            assert sum_rank is not None
            out[n] = sum_rank[n] < int(round(r * n_shared))
        elif n in element_users:
            used, count = element_users[n]
            votes = sum(((ranks.rank[t][n] < k[t]) & used[t]).to(torch.int16) for t in users)
            out[n] = votes >= rule.thresholds(count)
        else:
            votes = sum((ranks.rank[t][n] < k[t]).to(torch.int16) for t in users)
            out[n] = votes >= rule.threshold(len(users))
        if n in fixed:
            out[n] &= fixed[n].to(out[n].device)
    return out


def _shared_sum_ranks(ranks: _Ranks) -> tuple[dict[str, torch.Tensor], int]:
    shared = ranks.shared()
    if not shared:
        return {}, 0
    summed = [sum(ranks.normalised[t][n] for t in ranks.users[n]).reshape(-1) for n in shared]
    flat = torch.cat(summed)
    rank = descending_ranks(flat)
    out, start = {}, 0
    for n, s in zip(shared, summed):
        out[n] = rank[start:start + s.numel()].view(ranks.shapes[n])
        start += s.numel()
    return out, len(rank)


def fuse(scores: Mapping[str, Mapping[str, torch.Tensor]], sparsity: float, rule: str = "vote",
         fixed: Mapping[str, torch.Tensor] | None = None, per_element: bool = True) -> Fusion:
    """Keep-masks for every scored weight, fused by `rule`, at `sparsity` (zeroed fraction) within 0.001.

    `fixed` holds masks a model already carries (False = pruned before): those entries stay
    pruned and count towards `sparsity`, which must then be at least the sparsity they make.
    Votes on a shared tensor are counted per element among the tasks that use that element
    (`_Ranks.element_users`); `per_element=False` counts every user of the tensor instead.
    """
    check_sparsity(sparsity)
    if not scores:
        raise TaskcutError("fuse needs scores for at least one task")
    parsed = parse_rule(rule, len(scores))
    ranks = _Ranks(scores)
    sum_rank, n_shared = _shared_sum_ranks(ranks) if parsed.name == "score-sum" else ({}, 0)
    total = sum(math.prod(s) for s in ranks.shapes.values())
    target_keep = (1.0 - sparsity) * total
    fixed = {n: m for n, m in (fixed or {}).items() if n in ranks.shapes}
    for n, m in fixed.items():
        if tuple(m.shape) != tuple(ranks.shapes[n]):
            raise TaskcutError(f"the existing mask of {n} has shape {tuple(m.shape)}, the weight {tuple(ranks.shapes[n])}")
    already = sum(int((~m.bool()).sum()) for m in fixed.values()) / total
    if already > sparsity + TOLERANCE:
        raise TaskcutError(f"the model is already {already:.4f} sparse in the weights scored; ask for a sparsity of "
                           f"at least that (got {sparsity})")

    element_users = {n: ranks.element_users(n) for n in ranks.shared()} if per_element else {}

    def kept(r: float) -> tuple[int, dict[str, torch.Tensor]]:
        masks = _masks_at(ranks, parsed, r, sum_rank, n_shared, fixed, element_users)
        return sum(int(m.sum()) for m in masks.values()), masks

    lo, hi = 0.0, 1.0
    best_r, (best_kept, best_masks) = 1.0, kept(1.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        n_kept, masks = kept(mid)
        if abs(n_kept - target_keep) < abs(best_kept - target_keep):
            best_r, best_kept, best_masks = mid, n_kept, masks
        if abs(n_kept - target_keep) <= 0.25 * TOLERANCE * total:
            break
        if n_kept < target_keep:
            lo = mid
        else:
            hi = mid
    achieved = 1.0 - best_kept / total
    per_layer = {n: 1.0 - float(m.float().mean()) for n, m in best_masks.items()}
    return Fusion(best_masks, best_r, achieved, per_layer)
