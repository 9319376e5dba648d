"""ONNX / TorchScript export with parity checks, int8 agreement, bench, and refusals that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from taskcut.cli import app
from taskcut.compact.masking import apply_masks
from taskcut.compact.structured import structured_prune
from taskcut.data import SynthDataset, iterate_batches
from taskcut.deploy.export import export, ort_session, sample_inputs
from taskcut.models import build_model, load, save
from taskcut.cut.score import prunable_parameters, score
from taskcut.cut.select import select

from .conftest import tiny_model_config

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("export")
    dense = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 16})).eval()
    sparse = select(dense, ["seg", "depth"])
    g = torch.Generator().manual_seed(0)
    apply_masks(sparse, {n: torch.rand(p.shape, generator=g) < 0.3 for n, p in prunable_parameters(sparse).items()})
    structured = select(dense, ["seg", "depth"])
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    structured_prune(structured, batches[0]["image"][:1], score(structured, structured.config.task_specs(), batches),
                     0.7)
    return {"dense": save(dense, root / "dense.safetensors"), "sparse": save(sparse, root / "sparse.safetensors"),
            "structured": save(structured, root / "structured.safetensors")}


@pytest.mark.parametrize("which", ["dense", "sparse", "structured"])
def test_onnx_matches_eager_with_named_outputs_and_dynamic_batch(models: dict[str, Path], tmp_path: Path,
                                                                which: str) -> None:
    out = tmp_path / "m.onnx"
    report = export(models[which], "onnx", out, size=(32, 32))
    model = load(models[which])
    assert list(report) == model.tasks and all(r["max_abs_diff"] <= 1e-4 for r in report.values())
    session = ort_session(out)
    assert [o.name for o in session.get_outputs()] == model.tasks
    x = sample_inputs((32, 32), n=3, seed=5)  # another batch size than the export's example
    got = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    for task, value in zip(model.tasks, got):
        np.testing.assert_allclose(value, ref[task].numpy(), atol=1e-4)


def test_torchscript_and_int8(models: dict[str, Path], tmp_path: Path) -> None:
    report = export(models["structured"], "torchscript", tmp_path / "m.pt", size=(32, 32))
    assert max(r["max_abs_diff"] for r in report.values()) <= 1e-4
    int8 = export(models["structured"], "onnx", tmp_path / "m8.onnx", int8=True, size=(32, 32))
    assert 0.0 <= int8["seg"]["argmax_agreement"] <= 1.0 and int8["depth"]["relative_error"] >= 0.0
    assert (tmp_path / "m8.onnx").stat().st_size < (tmp_path / "m.pt").stat().st_size


def test_structured_model_reloads_and_exports_without_the_original(models: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "alone.safetensors"
    copy.write_bytes(models["structured"].read_bytes())
    result = runner.invoke(app, ["export", str(copy), "--format", "onnx", "--size", "32", "32",
                                 "--out", str(tmp_path / "alone.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "alone.onnx").stat().st_size > 0


def test_bench_reports_ratios(models: dict[str, Path]) -> None:
    result = runner.invoke(app, ["bench", str(models["structured"]), "--vs", str(models["dense"]), "--size", "32",
                                 "32", "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ratios"]["parameters"] < 0.3 and report["ratios"]["macs"] < 0.5
    assert report["model"]["latency_ms_median"] >= report["model"]["latency_ms_min"] > 0


@pytest.mark.parametrize("args,match", [
    (["--format", "tflite"], "unknown format 'tflite'; formats: onnx, torchscript"),
    (["--format", "torchscript", "--int8"], "--int8 is available for --format onnx only"),
])
def test_export_bad_options_write_nothing(models: dict[str, Path], tmp_path: Path, args: list[str],
                                          match: str) -> None:
    out = tmp_path / "m.out"
    result = runner.invoke(app, ["export", str(models["dense"]), *args, "--out", str(out)])
    assert result.exit_code == 2 and match in result.output, result.output
    assert not out.exists()


def test_export_refuses_a_file_that_is_not_a_taskcut_model(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(plain), "--out", str(out)])
    assert result.exit_code == 2 and "not a taskcut model" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["plain.safetensors"]
