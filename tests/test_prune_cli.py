"""prune / finetune / evaluate / info / demo through the CLI, and their refusals (nothing written)."""

from __future__ import annotations

import json
import re
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
    model = build_model(tiny_model_config()).eval()
    with torch.no_grad():  # depth near the scenes' typical range, so depth ratios (delta_1.25) are defined
        for branch in model.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    return save(model, tmp_path_factory.mktemp("base") / "base.safetensors")


def _prune(base: Path, synth_dir: Path, out: Path, *extra: str):
    args = ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.7", "--data", f"synth:{synth_dir}",
            "--batches", "2", "--batch-size", "4", "--out", str(out), "--quiet", *extra]
    return runner.invoke(app, args)


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_prune_finetune_evaluate_info(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    compact = tmp_path / "compact.safetensors"
    result = _prune(base, synth_dir, compact)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "sparsity of prunable weights" in line)
    assert abs(float(row.split()[-2]) - 0.7) <= 1e-3 and "per layer" in result.output
    model = load(compact)
    assert model.tasks == ["seg", "depth"]
    masks = masks_of(model)
    zeros = sum(int((~m).sum()) for m in masks.values())
    assert abs(zeros / sum(m.numel() for m in masks.values()) - 0.7) <= 1e-3
    spec_prov = json.loads(runner.invoke(app, ["info", str(compact), "--json"]).output)["provenance"]
    assert spec_prov["method"] == "cut" and spec_prov["rule"] == "vote" and spec_prov["tasks"] == ["seg", "depth"]

    tuned = tmp_path / "tuned.safetensors"
    result = runner.invoke(app, ["finetune", str(compact), "--data", f"synth:{synth_dir}", "--steps", "2",
                                 "--batch-size", "4", "--val-every", "1", "--out", str(tuned), "--quiet"])
    assert result.exit_code == 0, result.output
    again = load(tuned)
    for name, mask in masks_of(again).items():
        assert torch.equal(mask, masks[name])
        assert torch.all(again.get_submodule(name.rpartition(".")[0]).weight[~mask] == 0)

    report_path = tmp_path / "metrics.json"
    result = runner.invoke(app, ["evaluate", str(tuned), "--data", f"synth:{synth_dir}", "--baseline", str(base),
                                 "--out", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report["metrics"]) == {"seg", "depth"}
    assert set(report["baseline"]["per_task"]) == {"seg", "depth"}
    assert "delta_T" in result.output
    info = runner.invoke(app, ["info", str(tuned)])
    assert info.exit_code == 0 and "sparsity of masked weights: 0.70" in info.output


@pytest.mark.parametrize("extra,match", [
    (["--tasks", "seg,pose"], "unknown task.*pose.*seg, normal, depth, keypoint, edge"),
    (["--sparsity", "1.0"], r"sparsity must be in \[0, 1\)"),
    (["--sparsity", "-0.2"], r"sparsity must be in \[0, 1\)"),
    (["--fusion", "mean"], "unknown fusion rule 'mean'; rules: vote"),
    (["--fusion", "vote:3"], "between 1 and the 2 selected"),
    (["--batches", "50"], "asked for 50 batches of 4 .200 images., but the train split holds 12"),
])
def test_prune_bad_input_writes_nothing(base: Path, synth_dir: Path, tmp_path: Path, extra: list[str],
                                        match: str) -> None:
    out = tmp_path / "c.safetensors"
    result = _prune(base, synth_dir, out, *extra)
    assert re.search(match, _error(result)), result.output
    assert list(tmp_path.iterdir()) == []


def test_prune_refuses_existing_output_and_the_input(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.safetensors"
    out.write_bytes(b"keep me")
    assert "--force" in _error(_prune(base, synth_dir, out))
    assert out.read_bytes() == b"keep me"
    before = base.read_bytes()
    assert "overwrite the input" in _error(_prune(base, synth_dir, base, "--force"))
    assert base.read_bytes() == before


class _NotKeyed(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_model_output_not_keyed_by_task() -> None:
    from taskcut.cut.decompose import decompose
    from taskcut.errors import TaskcutError

    with pytest.raises(TaskcutError, match="not keyed by task"):
        decompose(_NotKeyed(), torch.zeros(1, 3, 8, 8))


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("x")
    assert "not a taskcut demo folder" in _error(runner.invoke(app, ["demo", "--out", str(tmp_path), "--quiet"]))
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
