"""CUT scoring (one forward per batch) against the reference procedure, fusion rules and exact sparsity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from taskcut.data import SynthDataset, iterate_batches
from taskcut.errors import TaskcutError
from taskcut.cut.fuse import fuse, parse_rule
from taskcut.models import build_model
from taskcut.cut.score import score, score_reference
from taskcut.cut.select import select

from .conftest import tiny_model_config


@pytest.fixture(scope="module")
def setup(synth_dir: Path):
    torch.manual_seed(0)
    model = build_model(tiny_model_config())
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for batch in iterate_batches(SynthDataset(synth_dir, "train"), 4):
            model(batch["image"])
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    return model, batches


def test_scores_equal_the_reference_and_use_one_forward_per_batch(setup) -> None:
    model, batches = setup
    specs = model.config.task_specs()
    chosen = {t: specs[t] for t in ("seg", "depth")}
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        ours = score(model, chosen, batches)
    finally:
        handle.remove()
    assert len(calls) == len(batches)
    assert model.training  # mode restored
    ref = score_reference(model, chosen, batches)
    assert set(ours) == {"seg", "depth"}
    for task in chosen:
        assert set(ours[task]) == set(ref[task])
        assert not any(n.startswith("heads.normal") for n in ours[task])
        for name in ours[task]:
            torch.testing.assert_close(ours[task][name], ref[task][name], rtol=1e-6, atol=1e-12)
    assert any(float(s.sum()) > 0 for s in ours["seg"].values())


def test_scores_are_deterministic_in_eval_mode(setup) -> None:
    model, batches = setup
    chosen = {"seg": model.config.task_specs()["seg"]}
    a, b = score(model, chosen, batches), score(model, chosen, batches)
    assert all(torch.equal(a["seg"][n], b["seg"][n]) for n in a["seg"])


@pytest.fixture(scope="module")
def two_task_scores(setup):
    model, batches = setup
    small = select(model, ["seg", "depth"]).model
    return small, score(small, small.config.task_specs(), batches)


@pytest.mark.parametrize("rule", ["vote", "vote:1", "vote:2", "majority", "union", "intersection", "score-sum"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.7, 0.9])
def test_every_rule_meets_the_sparsity_exactly(two_task_scores, rule: str, sparsity: float) -> None:
    _, scores = two_task_scores
    result = fuse(scores, sparsity, rule)
    zeros = sum(int((~m).sum()) for m in result.masks.values())
    total = sum(m.numel() for m in result.masks.values())
    assert abs(zeros / total - sparsity) <= 1e-3
    assert result.sparsity == pytest.approx(zeros / total)


def _topk(scores: dict[str, torch.Tensor], r: float) -> dict[str, torch.Tensor]:
    """Independent recomputation of one task's keep set at keep ratio r."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    flat = flat / flat.sum()
    k = int(round(r * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return out


@pytest.mark.parametrize("rule,combine", [
    ("union", lambda a, b: a | b), ("intersection", lambda a, b: a & b), ("vote", lambda a, b: a & b),
    ("vote:1", lambda a, b: a | b), ("majority", lambda a, b: a & b),
])
def test_rules_mean_what_they_say(two_task_scores, rule: str, combine) -> None:
    _, scores = two_task_scores
    result = fuse(scores, 0.6, rule)
    keep = {t: _topk(scores[t], result.keep_ratio) for t in scores}
    for name, mask in result.masks.items():
        if name.startswith("trunk."):
            assert torch.equal(mask, combine(keep["seg"][name], keep["depth"][name])), name
        else:
            task = name.split(".")[1]
            assert torch.equal(mask, keep[task][name]), name


def test_vote_with_one_task_keeps_a_trunk(setup) -> None:
    model, batches = setup
    small = select(model, ["depth"]).model
    result = fuse(score(small, small.config.task_specs(), batches), 0.7, "vote")
    trunk = [m for n, m in result.masks.items() if n.startswith("trunk.")]
    kept = sum(int(m.sum()) for m in trunk) / sum(m.numel() for m in trunk)
    assert kept > 0.1
    assert abs(result.sparsity - 0.7) <= 1e-3


def test_bad_rules_and_sparsities(two_task_scores) -> None:
    _, scores = two_task_scores
    with pytest.raises(TaskcutError, match="unknown fusion rule 'avg'; rules: vote, vote:K"):
        fuse(scores, 0.5, "avg")
    with pytest.raises(TaskcutError, match="between 1 and the 2 selected"):
        fuse(scores, 0.5, "vote:3")
    with pytest.raises(TaskcutError, match="integer"):
        parse_rule("vote:x", 2)
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(TaskcutError, match=r"sparsity must be in \[0, 1\)"):
            fuse(scores, bad, "vote")
