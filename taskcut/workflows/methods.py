"""Pruning methods compared by `taskcut compare`: each one is (how to score, how to fuse).

All produce keep-masks through the same `fuse` (so the same exact sparsity) and the same
compaction; only the scores and the fusion rule differ:

* `cut`: per-task |w * dL_t/dw| on the pre-trained weights, fused by `vote`;
* `disparse`: the same per-task scores fused by `union` (DiSparse's pre-trained mode);
* `snip`: one combined loss (the weighted sum over the selected tasks), one global top-k;
* `magnitude`: one-shot |w| (the CUT paper's "LTH" baseline, no rewinding);
* `random`: random scores (seeded).

A method with one score set is fused as a single pseudo-task, which makes `fuse` a plain
global top-k over all weights in scope.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from ..errors import TaskcutError, check_choice
from ..cut.score import COMBINED, Scores, prunable_parameters, score
from ..tasks.dense import TaskSpec

METHODS = ("cut", "disparse", "snip", "magnitude", "random")
RULES = {"cut": "vote", "disparse": "union", "snip": "vote", "magnitude": "vote", "random": "vote"}


def check_methods(methods: Iterable[str]) -> list[str]:
    """Known methods, each once, in the user's order."""
    methods = list(methods)
    check_choice(list(METHODS), methods, "method", "methods:")
    return methods


def method_scores(method: str, model: nn.Module, tasks: Mapping[str, TaskSpec], weights: Mapping[str, float],
                  batches: Iterable[Mapping[str, torch.Tensor]], seed: int = 0, device: str = "cpu") -> Scores:
    """The scores `fuse` needs for `method` on the selected `model` (already restricted to `tasks`)."""
    if method in ("cut", "disparse"):
        return score(model, tasks, batches, device=device)
    if method == "snip":
        return score(model, tasks, batches, device=device, combined=weights)
    params = prunable_parameters(model)
    if method == "magnitude":
        return {COMBINED: {n: p.detach().abs().clone() for n, p in params.items()}}
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return {COMBINED: {n: torch.rand(p.shape, generator=g) for n, p in params.items()}}
    raise TaskcutError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
