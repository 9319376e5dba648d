"""Budgets instead of sparsities: the least pruning within the budget and at most a little below it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.compact.masking import masks_of
from taskcut.cut.budget import FLOOR, parse_budget
from taskcut.deploy.bench import count_macs
from taskcut.errors import TaskcutError
from taskcut.models import build_model, save

from .conftest import tiny_model_config

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})
    return save(build_model(cfg).eval(), tmp_path_factory.mktemp("budget") / "base.safetensors")


def _prune(base: Path, synth_dir: Path, out: Path, budget: str, *extra: str):
    return runner.invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--budget", budget, "--data",
                               f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(out),
                               "--quiet", *extra])


def _nonzero(model: torch.nn.Module) -> int:
    zeros = sum(int((~m).sum()) for m in masks_of(model).values())
    return sum(p.numel() for p in model.parameters()) - zeros


@pytest.mark.parametrize("budget,structured", [("params=150k", False), ("params=0.3", False), ("size=700kB", False),
                                               ("params=0.5", True), ("macs=3M", True)])
def test_the_result_meets_its_budget_and_is_not_far_below(base: Path, synth_dir: Path, tmp_path: Path, budget: str,
                                                          structured: bool) -> None:
    out = tmp_path / "small.safetensors"
    result = _prune(base, synth_dir, out, budget, *(["--structured"] if structured else []))
    assert result.exit_code == 0, result.output
    assert "budget" in result.output and "reached" in result.output
    parsed = parse_budget(budget)
    model = load(out)
    if parsed.kind == "params":
        dense = sum(p.numel() for n, p in load(base).named_parameters()
                    if not n.startswith(("heads.normal", "heads.keypoint", "heads.edge")))
        target = parsed.value * dense if parsed.relative else parsed.value
        figure = _nonzero(model)
    elif parsed.kind == "size":
        target, figure = parsed.value, out.stat().st_size  # the file as written, provenance and all
    else:
        target, figure = parsed.value, count_macs(model, torch.rand(1, 3, 32, 32))
    assert figure <= target, (figure, target)
    assert figure >= FLOOR[parsed.kind] * target, (figure, target)


def test_a_budget_that_cannot_be_met_names_the_smallest_reachable(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.safetensors"
    result = _prune(base, synth_dir, out, "params=10")
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "cannot be met: the most pruned model" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("budget,match", [("flops=3M", "unknown budget"), ("params=-3", "not a positive"),
                                          ("latency=fast", "not a positive"), ("size=2 parsecs", "not a positive")])
def test_bad_budgets_are_clear_errors(budget: str, match: str) -> None:
    with pytest.raises(TaskcutError, match=match):
        parse_budget(budget)


def test_macs_and_latency_budgets_need_structured_pruning(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.safetensors"
    result = _prune(base, synth_dir, out, "latency=5ms")
    assert result.exit_code == 2 and "needs structured pruning" in result.output and not out.exists()


def test_own_model_budget_through_the_api() -> None:
    import taskcut
    from taskcut import Task

    from . import own_models

    model = own_models.fpn().eval()
    tasks = {"seg": Task.segmentation(classes=6), "depth": Task.depth(), "normal": Task.normal()}
    small = taskcut.prune_model(model, tasks, own_models.batches(list(tasks)), keep=["seg", "depth"],
                                budget="params=0.3")
    report = small.budget
    assert report["reached"] <= report["target"] and report["ratio"] >= 0.97
    assert _nonzero(small.model) == report["reached"]
    assert not [k for k in vars(small.model) if k.startswith("taskcut")]  # nothing carried on the module


def test_a_fraction_of_the_dense_figure(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    """`macs=0.5`: half the MACs of the dense model on the same tasks, whatever the machine or model size."""
    from taskcut.cut.select import select

    out = tmp_path / "small.safetensors"
    result = _prune(base, synth_dir, out, "macs=0.5", "--structured")
    assert result.exit_code == 0, result.output
    image = torch.rand(1, 3, 32, 32)
    dense = count_macs(select(load(base), ["seg", "depth"]).model, image)
    figure = count_macs(load(out), image)
    # within the budget, and near it: whole channels of this tiny model move MACs in steps of about 3%
    assert 0.9 * 0.5 * dense <= figure <= 0.5 * dense, (figure, dense)


def test_own_model_budgets_on_the_runtimes_file_through_the_api(tmp_path: Path) -> None:
    """`prune_model(runtime=...)`: size and memory of the file the runtime loads (int8 when asked), and the
    download of an unstructured one; what cannot fall with sparsity is refused before any work."""
    import taskcut
    from taskcut import Task
    from taskcut.deploy.artifact import Deployment, installed_bytes, write_artifact

    from . import own_models

    model = own_models.fpn().eval()
    tasks = {"seg": Task.segmentation(classes=6), "depth": Task.depth(), "normal": Task.normal()}
    data = own_models.batches(list(tasks))
    small = taskcut.prune_model(model, tasks, data, keep=["seg", "depth"], budget="size=0.8", structured=True,
                                runtime="onnxruntime", int8=True, round_to=1)
    report = small.budget
    assert report["int8"] and "model.onnx in onnxruntime, int8" in report["measured_on"]
    written = write_artifact(small.model, data[0]["image"], Deployment("onnxruntime", True, 2, data[0]["image"]),
                             tmp_path)
    assert FLOOR["size"] * report["target"] <= installed_bytes(written) <= report["target"]
    download = taskcut.prune_model(model, tasks, data, keep=["seg"], budget="transport=0.5", runtime="onnxruntime")
    assert download.budget["kind"] == "transport" and download.budget["ratio"] >= FLOOR["transport"]
    for kwargs, match in (({"budget": "memory=0.9", "runtime": "onnxruntime"}, "holds every weight"),
                          ({"budget": "transport=0.5"}, "give the runtime"),
                          ({"sparsity": 0.5, "runtime": "onnxruntime"}, "do not apply with a sparsity"),
                          ({"budget": "size=0.5", "structured": True, "int8": True}, "give runtime= too"),
                          ({"budget": "size=0.5", "structured": True, "runtime": "onnxruntime", "calibration": data},
                           "does not apply without int8")):
        with pytest.raises(TaskcutError, match=match):
            taskcut.prune_model(model, tasks, data, keep=["seg"], **kwargs)


def test_an_int8_latency_budget_at_another_size_than_the_data(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The int8 file timed at --size is calibrated on the train images resized to that size (the demo's
    int8 device times 224 x 224 on 64 x 64 data)."""
    from taskcut.models import read_spec

    out = tmp_path / "small.safetensors"
    result = _prune(base, synth_dir, out, "latency=10s", "--structured", "--runtime", "onnxruntime", "--int8",
                    "--size", "48", "48")
    assert result.exit_code == 0, result.output
    report = read_spec(out)["provenance"]["budget_report"]
    assert report["int8"] and report["input"] == [1, 3, 48, 48] and "int8" in report["measured_on"]
