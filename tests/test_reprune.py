"""Masked models as input: a taskcut compact file and an imported pruned checkpoint are re-pruned,
unstructured and structured, through `prune` and `compare`; their zeros stay zero and count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune as torch_prune
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.compact.masking import masks_of, plain_state
from taskcut.models import build_model, save

from .conftest import tiny_model_config
from .test_import import TASKS, _import, _reference_name

runner = CliRunner()


@pytest.fixture(scope="module")
def compact(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A taskcut compact file: the tiny base pruned to {seg, depth} at 50%."""
    folder = tmp_path_factory.mktemp("reprune")
    torch.manual_seed(0)
    model = build_model(tiny_model_config()).eval()
    with torch.no_grad():  # depth near the data's range, so delta_T against it is defined
        for branch in model.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    base = save(model, folder / "base.safetensors")
    out = folder / "compact.safetensors"
    result = runner.invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.5", "--data",
                                 f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pruned reference checkpoint (weight_orig / weight_mask, 60% per conv) imported with `taskcut import`."""
    folder = tmp_path_factory.mktemp("imported")
    torch.manual_seed(1)
    config = tiny_model_config({"seg": {"kind": "segmentation", "channels": 40},
                                "normal": {"kind": "normal", "channels": 3}, "depth": {"kind": "depth", "channels": 1}})
    model = build_model(config).eval()
    with torch.no_grad():
        for branch in model.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    for conv in [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]:
        torch_prune.l1_unstructured(conv, "weight", amount=0.6)
    state = {}
    for key, value in model.state_dict().items():
        head, _, leaf = key.rpartition(".")
        name = _reference_name(key if leaf not in ("weight_orig", "weight_mask") else head + ".weight")
        state["module." + name.rsplit(".", 1)[0] + "." + leaf] = value
    torch.save(state, folder / "pruned.pth")
    out = folder / "imported.safetensors"
    result = _import(folder / "pruned.pth", out)
    assert result.exit_code == 0, result.output
    assert masks_of(load(out)) and TASKS
    return out


def _zeros(path: Path) -> dict[str, torch.Tensor]:
    return {k: v == 0 for k, v in plain_state(load(path)).items() if v.dim() > 1}


def _prune(model: Path, tasks: str, sparsity: float, synth_dir: Path, out: Path, *extra: str):
    return runner.invoke(app, ["prune", str(model), "--tasks", tasks, "--sparsity", str(sparsity), "--data",
                               f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(out),
                               "--quiet", *extra])


@pytest.mark.parametrize("source,tasks", [("compact", "seg,depth"), ("imported", "normal,depth")])
def test_reprune_keeps_every_zero_and_reaches_the_sparsity(source: str, tasks: str, synth_dir: Path,
                                                           tmp_path: Path, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(source)
    out = tmp_path / "again.safetensors"
    result = _prune(path, tasks, 0.8, synth_dir, out)
    assert result.exit_code == 0, result.output
    before, after = _zeros(path), _zeros(out)
    for name, zero in after.items():
        assert bool(zero[before[name]].all()), f"{name}: a weight that was zero came back"
    masks = masks_of(load(out))
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert kept == pytest.approx(0.2, abs=2e-3)


def test_reprune_below_the_existing_sparsity_is_refused(compact: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "less.safetensors"
    result = _prune(compact, "seg,depth", 0.3, synth_dir, out)
    assert result.exit_code == 2 and "already 0.49" in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("source,tasks,sparsity", [("compact", "seg,depth", 0.3), ("imported", "normal,depth", 0.5)])
def test_structured_reprune_keeps_the_zeros_masked(source: str, tasks: str, sparsity: float, synth_dir: Path,
                                                   tmp_path: Path, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(source)
    out = tmp_path / "st.safetensors"
    result = _prune(path, tasks, sparsity, synth_dir, out, "--structured", "--fusion", "union")
    assert result.exit_code == 0, result.output
    model = load(out)
    masks = masks_of(model)
    assert masks  # the zeros that survive the channel cut are still masks, so fine-tuning keeps them
    zeros = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert zeros > 0.3
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 32, 32))
    assert set(outputs) == set(tasks.split(","))


@pytest.mark.parametrize("method", ["cut", "magnitude", "random"])
def test_compare_on_a_masked_base(compact: Path, synth_dir: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(compact), "--tasks", "seg,depth", "--data", f"synth:{synth_dir}",
                                 "--out", str(out), "--sparsities", "0.7", "--methods", method, "--seeds", "0",
                                 "--finetune-steps", "1", "--batches", "2", "--batch-size", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    before = _zeros(compact)
    after = _zeros(out / "models" / f"{method}-s0.7-seed0.safetensors")
    assert all(bool(after[n][before[n]].all()) for n in after)
