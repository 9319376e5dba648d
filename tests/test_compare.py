"""`taskcut compare`: methods at equal sparsity, resumable cells, report files, and refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskcut.cli import app
from taskcut.cut.fuse import fuse
from taskcut.workflows.methods import RULES, method_scores
from taskcut.cut.score import prunable_parameters
from taskcut.models import build_model, save
from taskcut.cut.select import select

from .conftest import tiny_model_config

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(tiny_model_config()).eval()
    with torch.no_grad():
        for branch in model.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    return save(model, tmp_path_factory.mktemp("cmp") / "base.safetensors")


def _args(base: Path, synth_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", str(base), "--tasks", "seg,depth", "--data", f"synth:{synth_dir}", "--out", str(out),
            "--sparsities", "0.5", "--seeds", "0", "--finetune-steps", "1", "--batches", "2", "--batch-size", "4",
            "--quiet", *extra]


@pytest.mark.parametrize("method", ["cut", "disparse", "snip", "magnitude", "random"])
def test_every_method_meets_the_same_sparsity(base: Path, synth_dir: Path, method: str) -> None:
    from taskcut import load
    from taskcut.data import SynthDataset, iterate_batches

    model = select(load(base), ["seg", "depth"]).model
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    scores = method_scores(method, model, model.config.task_specs(), {}, batches, seed=1)
    result = fuse(scores, 0.6, RULES[method])
    assert abs(result.sparsity - 0.6) <= 1e-3
    assert set(result.masks) == set(prunable_parameters(model))


def test_compare_writes_results_and_resumes(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, _args(base, synth_dir, out, "--methods", "cut,random"))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], float(r["sparsity"])) for r in rows] == [("dense+ft", 0.0), ("cut", 0.5), ("random", 0.5)]
    for r in rows[1:]:
        assert abs(float(r["achieved_sparsity"]) - 0.5) <= 1e-3
        assert {"delta_T", "delta_T_control", "seg.miou", "depth.abs_err", "file_bytes", "score_seconds"} <= set(r)
    assert float(rows[0]["delta_T_control"]) == 0.0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 + 2 + 1 + 2
    assert "cut" in (out / "results.md").read_text()
    stamp = (out / "models" / "cut-s0.5-seed0.safetensors").stat().st_mtime_ns
    result = runner.invoke(app, _args(base, synth_dir, out, "--methods", "cut,random,magnitude"))
    assert result.exit_code == 0, result.output
    assert (out / "models" / "cut-s0.5-seed0.safetensors").stat().st_mtime_ns == stamp  # not recomputed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"0"}  # resumed rows keep integer seeds


def test_control_is_the_dense_model_with_the_same_fine_tuning(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The control row is the dense model fine-tuned with the cells' budget; cells are measured against it."""
    from taskcut import load
    from taskcut.config import TrainConfig
    from taskcut.data import SynthDataset
    from taskcut.workflows.compare import metrics_of
    from taskcut.tasks import delta_t
    from taskcut.train.evaluate import evaluate
    from taskcut.train.fit import fit

    out = tmp_path / "cmp"
    result = runner.invoke(app, [*_args(base, synth_dir, out, "--methods", "cut"), "--finetune-steps", "3"])
    assert result.exit_code == 0, result.output
    from taskcut.workflows.compare import read_rows

    control, cut = read_rows(out / "results.csv")
    dense = select(load(base), ["seg", "depth"]).model
    specs = dense.config.task_specs()
    cfg = TrainConfig(steps=3, batch_size=32, lr=5e-4, val_every=1, seed=0)
    tuned = fit(dense, specs, {}, cfg, SynthDataset(synth_dir, "train"), SynthDataset(synth_dir, "val"),
                show_progress=False).model
    test = SynthDataset(synth_dir, "test")
    expected = evaluate(tuned, test, specs)
    got = metrics_of(control, specs)
    for task in specs:
        assert got[task] == pytest.approx(expected[task], rel=1e-5)
    dense_metrics = evaluate(select(load(base), ["seg", "depth"]).model, test, specs)
    assert control["delta_T"] == pytest.approx(delta_t(expected, dense_metrics, specs).delta_t, rel=1e-4)
    assert cut["delta_T_control"] == pytest.approx(delta_t(metrics_of(cut, specs), expected, specs).delta_t, rel=1e-4)
    assert "delta_T vs control" in (out / "results.md").read_text()


def test_compare_knows_a_retrained_base_by_its_hash(synth_dir: Path, tmp_path: Path) -> None:
    """A different model written to the same path must not reuse the finished cells of the old one."""
    path = tmp_path / "base.safetensors"
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(tiny_model_config()).eval()
        with torch.no_grad():
            for branch in model.heads["depth"].branches:
                branch.conv3.bias.fill_(1.25)
        save(model, path)
        result = runner.invoke(app, [*_args(path, synth_dir, tmp_path / "cmp", "--methods", "random"),
                                     "--finetune-steps", "0"])
        if seed == 0:
            assert result.exit_code == 0, result.output
    assert result.exit_code == 2 and "other settings" in result.output


@pytest.mark.parametrize("extra,match", [
    (["--methods", "cut,lottery"], "unknown method.*lottery; methods: cut, disparse, snip, magnitude, random"),
    (["--sparsities", "0.5,1.2"], r"sparsity must be in \[0, 1\)"),
    (["--sparsities", "-0.1"], r"sparsity must be in \[0, 1\)"),
    (["--seeds", ""], "at least one seed"),
    (["--seeds", "0,0"], "--seeds names a value twice"),
    (["--sparsities", "0.5,0.5"], "--sparsities names a value twice"),
    (["--batch-size", "0"], "--batch-size must be between 1 and 4096"),
    (["--finetunes", "plain,teach"], r"unknown fine-tuning recipe\(s\) teach; recipes: plain, distill"),
    (["--finetunes", "distill,distill"], "names a fine-tuning recipe twice"),
    (["--finetunes", "distill", "--distill-weight", "0"], "--distill-weight: Input should be greater than 0"),
])
def test_compare_bad_input_writes_nothing(base: Path, synth_dir: Path, tmp_path: Path, extra: list[str],
                                          match: str) -> None:
    import re

    out = tmp_path / "cmp"
    result = runner.invoke(app, _args(base, synth_dir, out, *extra))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(match, lines[0]), result.output
    assert not out.exists()


def test_distilled_cells_have_their_own_control(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Each recipe runs every method and has a control fine-tuned the same way; structured cells cut channels."""
    from taskcut import load
    from taskcut.models import read_spec

    torch.manual_seed(0)
    model = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})).eval()
    with torch.no_grad():
        for branch in model.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    base = save(model, tmp_path / "wide.safetensors")  # enough channels for 50% of whole channels
    out = tmp_path / "cmp"
    result = runner.invoke(app, _args(base, synth_dir, out, "--methods", "cut", "--finetunes", "plain,distill",
                                      "--structured"))
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"dense+ft", "dense+ft+distill", "cut", "cut+distill"}
    for name in ("cut", "cut+distill"):
        assert abs(float(rows[name]["achieved_sparsity"]) - 0.5) <= 0.02
        small = load(out / "models" / f"{name}-s0.5-seed0.safetensors")
        dense = select(load(base), ["seg", "depth"]).model
        assert sum(p.numel() for p in small.parameters()) < 0.6 * sum(p.numel() for p in dense.parameters())
    assert rows["cut"]["delta_T"] != rows["cut+distill"]["delta_T"]  # the recipe changed the training
    assert rows["dense+ft"]["delta_T"] != rows["dense+ft+distill"]["delta_T"]  # and its control's
    text = (out / "report.html").read_text()
    assert "dense+ft+distill" in text and "structured" in text
    assert read_spec(out / "models" / "cut+distill-s0.5-seed0.safetensors")["provenance"]["finetune"] == "distill"
