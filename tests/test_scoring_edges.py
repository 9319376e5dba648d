"""Reading a model must not change it, and scoring works however it is called (review findings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from taskcut.compact.structured import structured_prune
from taskcut.cut.decompose import decompose
from taskcut.cut.score import score
from taskcut.data import SynthDataset, iterate_batches
from taskcut.models import build_model
from taskcut.tasks import TaskSpec

from .archs import TupleOutput
from .conftest import tiny_model_config


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def _batches(synth_dir: Path) -> list[dict[str, torch.Tensor]]:
    return list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]


def test_decompose_and_structured_leave_batchnorm_statistics_alone(synth_dir: Path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})).train()
    before = _bn_state(model)
    decompose(model, torch.rand(2, 3, 32, 32))
    assert model.training  # the caller's mode is restored
    assert all(torch.equal(before[k], v) for k, v in _bn_state(model).items())
    batches = _batches(synth_dir)
    specs = model.config.task_specs()
    scores = score(model, {t: specs[t] for t in ("seg", "depth")}, batches)
    before = _bn_state(model)
    structured_prune(model, batches[0]["image"][:1], scores, 0.3, "union")
    assert model.training
    after = _bn_state(model)
    for key in ("num_batches_tracked",):  # the channel cut changes shapes, not the count of batches seen
        assert all(torch.equal(before[k], after[k]) for k in before if k.endswith(key))


def _dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_model_config().model_copy(update={"dropout": 0.5}))


def test_scores_are_taken_in_eval_mode_on_a_model_with_dropout(synth_dir: Path) -> None:
    batches = _batches(synth_dir)
    model = _dropout_model()
    chosen = {"seg": model.config.task_specs()["seg"]}
    model.train()
    in_train_mode = score(model, chosen, batches)
    assert model.training
    model.eval()
    in_eval_mode = score(model, chosen, batches)
    assert all(torch.equal(in_train_mode["seg"][n], in_eval_mode["seg"][n]) for n in in_eval_mode["seg"])
    # and dropout does matter here: the same procedure with dropout active gives other scores
    model.train()
    torch.manual_seed(1)
    drawn = {}
    for batch in batches:
        model.zero_grad(set_to_none=True)
        chosen["seg"].loss(model(batch["image"])["seg"], batch["seg"]).backward()
        for n, p in model.named_parameters():
            if p.grad is not None and p.dim() > 1:
                drawn[n] = drawn.get(n, 0) + (p.detach() * p.grad).abs()
    assert any(not torch.allclose(drawn[n], in_eval_mode["seg"][n]) for n in in_eval_mode["seg"] if n in drawn)


def test_score_under_no_grad_equals_score(synth_dir: Path) -> None:
    batches = _batches(synth_dir)
    model = _dropout_model().eval()
    chosen = {"depth": model.config.task_specs()["depth"]}
    expected = score(model, chosen, batches)
    with torch.no_grad():
        got = score(model, chosen, batches)
    assert all(torch.equal(expected["depth"][n], got["depth"][n]) for n in expected["depth"])


def test_score_takes_task_names_for_tuple_outputs() -> None:
    torch.manual_seed(0)
    model = TupleOutput().eval()
    specs = {"seg": TaskSpec("seg", "segmentation", 4), "normal": TaskSpec("normal", "normal", 3),
             "depth": TaskSpec("depth", "depth", 1)}
    batch = {"image": torch.rand(2, 3, 16, 16), "seg": torch.randint(0, 4, (2, 16, 16)),
             "normal": nn.functional.normalize(torch.randn(2, 3, 16, 16), dim=1), "depth": torch.rand(2, 1, 16, 16) + 1}
    chosen = {t: specs[t] for t in ("seg", "depth")}
    got = score(model, chosen, [batch], task_names=["seg", "normal", "depth"])
    assert set(got) == {"seg", "depth"}
    assert "depth.0.weight" in got["depth"] and "depth.0.weight" not in got["seg"]
    with pytest.raises(Exception, match="task names"):
        score(model, chosen, [batch])
