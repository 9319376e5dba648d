"""Fusion counts votes per element: a conv sliced into tasks keeps a working output for every task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taskcut.compact.masking import apply_masks
from taskcut.cut.fuse import fuse
from taskcut.cut.score import score
from taskcut.data import SynthDataset, iterate_batches
from taskcut.models import build_model
from taskcut.tasks import TaskSpec

from .archs import SlicedHead
from .conftest import tiny_model_config

SPECS = {"seg": TaskSpec("seg", "segmentation", 6), "depth": TaskSpec("depth", "depth", 1)}


@pytest.fixture(scope="module")
def sliced(synth_dir: Path):
    torch.manual_seed(0)
    model = SlicedHead().eval()
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    return model, batches, score(model, SPECS, batches)


@pytest.mark.parametrize("rule", ["vote", "vote:1", "vote:2", "majority", "union", "intersection", "score-sum"])
@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9, 0.95])
def test_sliced_output_conv_keeps_every_task_alive(sliced, rule: str, sparsity: float) -> None:
    model, batches, scores = sliced
    fusion = fuse(scores, sparsity, rule)
    assert abs(fusion.sparsity - sparsity) <= 1e-3
    rows = fusion.masks["out.weight"].flatten(1).any(dim=1)
    assert bool(rows[:6].any()) and bool(rows[6]), "a task lost every row of its output conv"
    pruned = apply_masks(type(model)(), fusion.masks)
    pruned.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        a, b = pruned(batches[0]["image"]), pruned(batches[1]["image"])
    for task in SPECS:  # the output still depends on the image: not a constant
        assert not torch.allclose(a[task], b[task]), task


def test_tensor_level_votes_kill_the_sliced_outputs(sliced) -> None:
    """What the published rule does here (and why per-element users exist): every row gets one vote."""
    _, _, scores = sliced
    fusion = fuse(scores, 0.5, "vote", per_element=False)
    assert not bool(fusion.masks["out.weight"].any())


def test_scenenet_masks_do_not_change(synth_dir: Path) -> None:
    """On the zoo every task scores every element of the shared trunk: per-element users change nothing."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config()).eval()
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    specs = model.config.task_specs()
    scores = score(model, {t: specs[t] for t in ("seg", "depth", "normal")}, batches)
    for rule in ("vote", "majority", "union", "intersection"):
        new, old = fuse(scores, 0.7, rule), fuse(scores, 0.7, rule, per_element=False)
        assert all(torch.equal(new.masks[n], old.masks[n]) for n in new.masks), rule
