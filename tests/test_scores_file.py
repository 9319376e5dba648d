"""Scores computed once for every task, reused by `prune --scores` for any subset: the same masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.compact.masking import masks_of
from taskcut.models import build_model, save

from .conftest import tiny_model_config

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save(build_model(tiny_model_config()).eval(), tmp_path_factory.mktemp("sc") / "base.safetensors")


def _prune(base: Path, synth_dir: Path, out: Path, tasks: str, *extra: str):
    return runner.invoke(app, ["prune", str(base), "--tasks", tasks, "--sparsity", "0.7", "--data",
                               f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(out),
                               "--quiet", *extra])


@pytest.mark.parametrize("tasks", ["seg,depth", "normal", "seg,normal,depth,keypoint,edge"])
def test_reused_scores_give_the_masks_of_scoring_the_selection(base: Path, synth_dir: Path, tmp_path: Path,
                                                                 tasks: str) -> None:
    scores = tmp_path / "scores.safetensors"
    result = runner.invoke(app, ["score", str(base), "--data", f"synth:{synth_dir}", "--batches", "2",
                                 "--batch-size", "4", "--out", str(scores), "--quiet"])
    assert result.exit_code == 0, result.output
    fresh, reused = tmp_path / "fresh.safetensors", tmp_path / "reused.safetensors"
    assert _prune(base, synth_dir, fresh, tasks).exit_code == 0
    result = _prune(base, synth_dir, reused, tasks, "--scores", str(scores))
    assert result.exit_code == 0, result.output
    a, b = masks_of(load(fresh)), masks_of(load(reused))
    assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


def test_scores_of_another_model_or_settings_are_refused(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    scores = tmp_path / "scores.safetensors"
    assert runner.invoke(app, ["score", str(base), "--data", f"synth:{synth_dir}", "--batches", "2",
                               "--batch-size", "4", "--out", str(scores), "--quiet"]).exit_code == 0
    torch.manual_seed(1)
    other = save(build_model(tiny_model_config()).eval(), tmp_path / "other.safetensors")
    out = tmp_path / "o.safetensors"
    result = _prune(other, synth_dir, out, "seg", "--scores", str(scores))
    assert result.exit_code == 2 and "another base model" in result.output and not out.exists()
    result = runner.invoke(app, ["prune", str(base), "--tasks", "seg", "--sparsity", "0.7", "--data",
                                 f"synth:{synth_dir}", "--batches", "1", "--batch-size", "4", "--out", str(out),
                                 "--scores", str(scores)])
    assert result.exit_code == 2 and "was scored with" in result.output and not out.exists()
