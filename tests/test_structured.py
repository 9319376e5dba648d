"""Structured CUT: channels really removed, sparsity met within 0.01, file reloads without the original."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.compact.structured import structured_prune
from taskcut.data import SynthDataset, iterate_batches
from taskcut.models import build_model, save
from taskcut.cut.score import score
from taskcut.cut.select import select

from .conftest import tiny_model_config

runner = CliRunner()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})
    return select(build_model(cfg).eval(), ["seg", "depth"]).model


@pytest.mark.parametrize("sparsity,rule", [(0.3, "vote"), (0.7, "vote"), (0.7, "union"), (0.9, "intersection")])
def test_channels_removed_at_the_requested_sparsity(synth_dir: Path, tmp_path: Path, sparsity: float,
                                                    rule: str) -> None:
    model = _model()
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    scores = score(model, model.config.task_specs(), batches)
    before = sum(p.numel() for p in model.parameters())
    x = batches[0]["image"][:2]
    result = structured_prune(model, x[:1], scores, sparsity, rule)
    after = sum(p.numel() for p in model.parameters())
    assert result["parameters_after"] == after
    assert abs((1 - after / before) - sparsity) <= 0.01
    out = model(x)
    assert out["seg"].shape == (2, 6, 5, 5) and out["depth"].shape == (2, 1, 5, 5)  # head outputs kept
    assert model.trunk.layer4[1].conv2.out_channels < 128  # really narrower (128 before)
    path = save(model, tmp_path / "s.safetensors")
    again = load(path)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), again(x).values()))


def test_prune_structured_cli(synth_dir: Path, tmp_path: Path) -> None:
    base = save(build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})).eval(),
                tmp_path / "base.safetensors")
    out = tmp_path / "s.safetensors"
    args = ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.7", "--data", f"synth:{synth_dir}",
            "--batches", "2", "--batch-size", "4", "--out", str(out), "--structured", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load(out)
    dense = select(load(base), ["seg", "depth"]).model
    removed = 1 - sum(p.numel() for p in model.parameters()) / sum(p.numel() for p in dense.parameters())
    assert abs(removed - 0.7) <= 0.01
    assert out.stat().st_size < 0.4 * (tmp_path / "base.safetensors").stat().st_size
    bad_args = [a if a != str(out) else str(tmp_path / "x.safetensors") for a in args] + ["--fusion", "score-sum"]
    bad = runner.invoke(app, bad_args)
    assert bad.exit_code == 2 and "score-sum is not available" in bad.output
    assert not (tmp_path / "x.safetensors").exists()


def test_wide_layers_keep_multiples_of_eight(synth_dir: Path) -> None:
    """Ragged channel counts run slowly on CPU kernels; groups of >= 32 channels keep multiples of 8."""
    torch.manual_seed(0)
    model = select(build_model(tiny_model_config().model_copy(update={"width": 0.5, "head_hidden": 64})).eval(),
                   ["seg", "depth"]).model
    original = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    result = structured_prune(model, batches[0]["image"][:1], score(model, model.config.task_specs(), batches), 0.6)
    assert abs(result["sparsity"] - 0.6) <= 0.01
    convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    wide = {n: c for n, c in convs.items() if original[n] >= 32 and not n.endswith("conv3")}
    assert wide and all(c % 8 == 0 for c in wide.values()), wide
    assert any(c < original[n] for n, c in wide.items())


class _Coarse(torch.nn.Module):
    """Few wide layers: keeping multiples of 8 of their 32 channels moves the parameter count in big steps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.mid = torch.nn.Conv2d(32, 32, 7, padding=3)
        self.seg = torch.nn.Conv2d(32, 4, 1)
        self.depth = torch.nn.Conv2d(32, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.mid(torch.relu(self.stem(x))))
        return {"seg": self.seg(f), "depth": self.depth(f)}


def test_out_of_reach_at_round_to_8_falls_back_to_single_channels(capsys: pytest.CaptureFixture) -> None:
    """0.5 is out of reach keeping multiples of 8 channels; left unset, rounding falls back to single channels
    (and says so); set by the user, it is kept and the refusal names it."""
    import taskcut
    from taskcut import Task
    from taskcut.errors import TaskcutError

    torch.manual_seed(0)
    tasks = {"seg": Task.segmentation(4), "depth": Task.depth()}
    data = [{"image": torch.rand(2, 3, 16, 16), "seg": torch.randint(0, 4, (2, 16, 16)),
             "depth": torch.rand(2, 1, 16, 16) + 0.5}]
    with pytest.raises(TaskcutError, match=r"reached 0.4335 .* keeping multiples of 8 channels \(round_to=1"):
        taskcut.prune_model(_Coarse(), tasks, data, keep=["seg", "depth"], sparsity=0.5, structured=True, round_to=8).model
    model = _Coarse()
    total = sum(p.numel() for p in model.parameters())
    small = taskcut.prune_model(model, tasks, data, keep=["seg", "depth"], sparsity=0.5, structured=True).model
    assert abs(1 - sum(p.numel() for p in small.parameters()) / total - 0.5) <= 0.01
    assert "single channels were kept instead" in capsys.readouterr().err
