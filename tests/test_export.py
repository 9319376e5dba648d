"""Export to every edge runtime with parity checks, int8 agreement and evaluation in the runtime, bench,
and refusals that write nothing."""

from __future__ import annotations

import json
import sys
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
from taskcut.deploy.export import open_runner, ort_session, sample_inputs
from taskcut.errors import TaskcutError
from taskcut.models import build_model, load, save
from taskcut.cut.score import prunable_parameters, score
from taskcut.cut.select import select

from .conftest import tiny_model_config

runner = CliRunner()


def export(model: Path, fmt: str, out: Path, int8: bool = False, size: tuple[int, int] | None = None,
           data: str | None = None, config: Path | None = None) -> dict:
    """`taskcut export` as a function: the export job on the model file's source."""
    from taskcut.jobs.exporting import export as export_job
    from taskcut.jobs.settings import ExportSettings
    from taskcut.jobs.source import source_of_file

    return export_job(source_of_file(model, config, data), model,
                      ExportSettings(format=fmt, int8=int8, size=size if data is None else None), out)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("export")
    dense = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 16})).eval()
    sparse = select(dense, ["seg", "depth"]).model
    g = torch.Generator().manual_seed(0)
    apply_masks(sparse, {n: torch.rand(p.shape, generator=g) < 0.3 for n, p in prunable_parameters(sparse).items()})
    structured = select(dense, ["seg", "depth"]).model
    batches = list(iterate_batches(SynthDataset(synth_dir, "train"), 4))[:2]
    structured_prune(structured, batches[0]["image"][:1], score(structured, structured.config.task_specs(), batches),
                     0.7)
    return {"dense": save(dense, root / "dense.safetensors"), "sparse": save(sparse, root / "sparse.safetensors"),
            "structured": save(structured, root / "structured.safetensors")}


RUNTIME_FORMATS = {"onnx": ".onnx", "executorch": ".pte", "litert": ".tflite", "openvino": ".xml"}


@pytest.mark.parametrize("fmt", list(RUNTIME_FORMATS))
@pytest.mark.parametrize("which", ["dense", "sparse", "structured"])
def test_every_runtime_matches_eager(models: dict[str, Path], tmp_path: Path, which: str, fmt: str) -> None:
    out = tmp_path / f"m{RUNTIME_FORMATS[fmt]}"
    record = export(models[which], fmt, out, size=(32, 32))
    model = load(models[which])
    assert list(record["check"]) == model.tasks
    assert all(r["max_abs_diff"] <= 1e-4 for r in record["check"].values()), record["check"]
    assert json.loads(Path(f"{out}.taskcut.json").read_text())["tasks"] == model.tasks
    # the file, run afresh in its runtime, on a batch of another size than the export's example
    run = open_runner(out, tasks=model.tasks)
    x = sample_inputs((32, 32), n=3, seed=5)
    with torch.no_grad():
        ref = model(x)
    if fmt == "litert":  # LiteRT's XNNPACK cannot resize the batch: a clear error, and batch 1 works
        with pytest.raises(TaskcutError, match="LiteRT file for batches of 1"):
            run(x.numpy())
        got = [np.concatenate(parts) for parts in zip(*(run(x[i:i + 1].numpy()) for i in range(3)))]
    else:
        got = run(x.numpy())
    for task, value in zip(model.tasks, got):
        np.testing.assert_allclose(value, ref[task].numpy(), atol=1e-4)


def test_onnx_and_openvino_outputs_are_named_by_task(models: dict[str, Path], tmp_path: Path) -> None:
    from taskcut.deploy.formats import litert, openvino

    model = load(models["structured"])
    export(models["structured"], "onnx", tmp_path / "m.onnx", size=(32, 32))
    assert [o.name for o in ort_session(tmp_path / "m.onnx").get_outputs()] == model.tasks
    export(models["structured"], "openvino", tmp_path / "m.xml", size=(32, 32))
    assert openvino.output_names(tmp_path / "m.xml") == model.tasks and (tmp_path / "m.bin").is_file()
    export(models["structured"], "litert", tmp_path / "m.tflite", size=(32, 32))
    assert sorted(litert.output_names(tmp_path / "m.tflite")) == sorted(model.tasks)


INT8_FLOOR = {"argmax_agreement": 0.85, "relative_error": 0.15}


@pytest.mark.parametrize("fmt", list(RUNTIME_FORMATS))
def test_int8_agrees_with_fp32_and_is_evaluated_in_its_runtime(models: dict[str, Path], tmp_path: Path,
                                                               synth_dir: Path, fmt: str) -> None:
    out = tmp_path / f"m8{RUNTIME_FORMATS[fmt]}"
    record = export(models["structured"], fmt, out, int8=True, data=f"synth:{synth_dir}")
    assert record["int8"] and record["calibration_images"] > 0
    assert record["check"]["seg"]["argmax_agreement"] >= INT8_FLOOR["argmax_agreement"], record["check"]
    assert record["check"]["depth"]["relative_error"] <= INT8_FLOOR["relative_error"], record["check"]
    evaluation = record["evaluation"]
    assert set(evaluation["metrics"]) == set(evaluation["eager_fp32"]) == {"seg", "depth"} and "delta_T" in evaluation
    assert evaluation["metrics"] != evaluation["eager_fp32"]  # int8 changes the figures a little, not nothing
    for task, metrics in evaluation["metrics"].items():  # random weights: close, not equal
        for name, value in metrics.items():
            assert value == pytest.approx(evaluation["eager_fp32"][task][name], rel=0.2, abs=0.05), (task, name)


def test_onnx_int8_runs_every_convolution_quantised(models: dict[str, Path], tmp_path: Path, synth_dir: Path) -> None:
    from taskcut.deploy.formats.onnx import convolutions

    export(models["structured"], "onnx", tmp_path / "fp32.onnx", size=(32, 32))
    export(models["structured"], "onnx", tmp_path / "int8.onnx", int8=True, data=f"synth:{synth_dir}")
    fp32, int8 = convolutions(tmp_path / "fp32.onnx"), convolutions(tmp_path / "int8.onnx")
    layers = sum(isinstance(m, torch.nn.Conv2d) for m in load(models["structured"]).modules())
    assert fp32["quantised"] == 0 and 10 < fp32["float"] < layers  # the heads' narrow first convolutions merged
    assert int8 == {"quantised": layers, "float": 0}  # int8 files are not merged: every layer, quantised


def test_own_model_exports_to_every_runtime(tmp_path: Path) -> None:
    from .test_own_cli import _config

    config = _config(tmp_path)
    small = tmp_path / "small.safetensors"
    result = runner.invoke(app, ["prune", "--config", str(config), "--tasks", "seg,depth", "--sparsity", "0.5",
                                 "--structured", "--out", str(small), "--quiet"])
    assert result.exit_code == 0, result.output
    for fmt, suffix in RUNTIME_FORMATS.items():
        record = export(small, fmt, tmp_path / f"own{suffix}", config=config)
        assert record["tasks"] == ["seg", "depth"], fmt
        assert max(r["max_abs_diff"] for r in record["check"].values()) <= 1e-4, (fmt, record["check"])
        evaluation = record["evaluation"]
        for task, metrics in evaluation["eager_fp32"].items():
            assert evaluation["metrics"][task] == pytest.approx(metrics, rel=1e-3, abs=1e-5), (fmt, task)
    record = export(small, "executorch", tmp_path / "own8.pte", int8=True, config=config)
    assert record["check"]["seg"]["argmax_agreement"] >= INT8_FLOOR["argmax_agreement"]


def test_torchscript_still_exports(models: dict[str, Path], tmp_path: Path) -> None:
    record = export(models["structured"], "torchscript", tmp_path / "m.pt", size=(32, 32))
    assert max(r["max_abs_diff"] for r in record["check"].values()) <= 1e-4


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
    report = json.loads(result.stdout)
    assert report["ratios"]["parameters"] < 0.3 and report["ratios"]["macs"] < 0.5
    assert report["model"]["latency_ms_median"] >= report["model"]["latency_ms_min"] > 0


@pytest.mark.parametrize("runtime", ["executorch", "litert", "openvino"])
def test_bench_an_exported_file_in_its_runtime_against_onnxruntime(models: dict[str, Path], tmp_path: Path,
                                                                   runtime: str) -> None:
    fmt = runtime
    out = tmp_path / f"m{RUNTIME_FORMATS[fmt]}"
    export(models["structured"], fmt, out, size=(32, 32))
    result = runner.invoke(app, ["bench", str(out), "--vs", str(models["structured"]), "--vs-runtime", "onnxruntime",
                                 "--size", "32", "32", "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["runtime"] == runtime and report["vs"]["runtime"] == "onnxruntime"
    assert report["ratios"]["latency_ms_median"] > 0
    wrong = runner.invoke(app, ["bench", str(out), "--runtime", "onnxruntime"])
    assert wrong.exit_code == 2 and f"it runs in {runtime}, not onnxruntime" in wrong.output


def test_bench_a_model_file_in_int8(models: dict[str, Path], synth_dir: Path) -> None:
    result = runner.invoke(app, ["bench", str(models["structured"]), "--runtime", "executorch", "--int8", "--data",
                                 f"synth:{synth_dir}", "--size", "32", "32", "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["model"]
    assert stats["int8"] and stats["export_bytes"] < stats["file_bytes"]


@pytest.mark.parametrize("args,match", [
    (["--format", "tflite"], "unknown format 'tflite'; formats: onnx, executorch, litert, openvino, torchscript"),
    (["--format", "torchscript", "--int8"], "--int8 is not available for --format torchscript"),
    (["--format", "litert"], "--out for --format litert must end in .tflite"),
    (["--format", "onnx", "--int8"], "--int8 calibrates on training images: pass --data"),
])
def test_export_bad_options_write_nothing(models: dict[str, Path], tmp_path: Path, args: list[str],
                                          match: str) -> None:
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(models["dense"]), *args, "--out", str(out)])
    assert result.exit_code == 2 and match in result.output, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,match", [
    (["--runtime", "tvm"], "unknown runtime 'tvm'; runtimes: torch, onnxruntime, executorch, litert, openvino"),
    (["--runtime", "torch", "--int8"], "--int8 runs in an edge runtime, not eager torch"),
])
def test_bench_bad_options(models: dict[str, Path], args: list[str], match: str) -> None:
    result = runner.invoke(app, ["bench", str(models["dense"]), *args])
    assert result.exit_code == 2 and match in result.output, result.output


@pytest.mark.parametrize("module,fmt,extra", [("executorch", "executorch", "executorch"),
                                              ("ai_edge_litert", "litert", "litert"),
                                              ("openvino", "openvino", "openvino")])
def test_a_runtime_not_installed_names_its_extra(models: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, module: str, fmt: str,
                                                 extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were absent
    out = tmp_path / f"m{RUNTIME_FORMATS[fmt]}"
    result = runner.invoke(app, ["export", str(models["dense"]), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 2 and f"pip install 'taskcut[{extra}]'" in result.output, result.output
    assert list(tmp_path.iterdir()) == []
    result = runner.invoke(app, ["bench", str(models["dense"]), "--runtime", fmt])
    assert result.exit_code == 2 and f"pip install 'taskcut[{extra}]'" in result.output, result.output


def test_export_refuses_a_file_that_is_not_a_taskcut_model(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(plain), "--out", str(out)])
    assert result.exit_code == 2 and "not a taskcut model" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["plain.safetensors"]


@pytest.mark.parametrize("suffix", [".onnx", ".pte", ".tflite", ".xml"])
def test_bench_refuses_a_file_that_is_not_a_model(tmp_path: Path, suffix: str) -> None:
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"not a model at all")
    result = runner.invoke(app, ["bench", str(bad), "--size", "32", "32"])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "could not be opened by" in lines[0], result.output
    assert [p.name for p in tmp_path.iterdir()] == [bad.name]


def test_export_command_prints_each_figure_under_its_own_column(models: dict[str, Path], tmp_path: Path,
                                                               synth_dir: Path) -> None:
    out = tmp_path / "m8.onnx"
    result = runner.invoke(app, ["export", str(models["structured"]), "--format", "onnx", "--int8", "--data",
                                 f"synth:{synth_dir}", "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "argmax_agreement" in line)
    depth = next(line for line in result.stdout.splitlines() if line.strip("│┃ ").startswith("depth"))
    columns = [c.strip() for c in header.strip("┃│").split("┃" if "┃" in header else "│")]
    cells = [c.strip() for c in depth.strip("│").split("│")]
    row = dict(zip(columns, cells))
    assert row["argmax_agreement"] == "" and float(row["relative_error"]) < 0.15, result.stdout
    assert "run in onnxruntime: delta_T against the fp32 model" in result.stdout


def test_an_artifact_is_its_own_files_not_others_of_the_same_stem(tmp_path: Path) -> None:
    """Installed and download bytes count the file a runtime loads and its companions only: another format's
    export beside it with the same stem (a device whose runtime changed, a user's folder of exports) is not
    counted nor packed."""
    import io
    import tarfile

    from taskcut.deploy.artifact import Deployment, installed_bytes, transport_archive, write_artifact

    class Alone(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.conv(x)}

    example = torch.rand(1, 3, 16, 16)
    onnx_file = write_artifact(Alone().eval(), example, Deployment("onnxruntime"), tmp_path)
    xml = write_artifact(Alone().eval(), example, Deployment("openvino"), tmp_path)
    (tmp_path / "model.pte").write_bytes(b"x" * 1000)  # a stale export of the same stem
    assert installed_bytes(onnx_file) == onnx_file.stat().st_size
    assert installed_bytes(xml) == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    with tarfile.open(fileobj=io.BytesIO(transport_archive(onnx_file)), mode="r:xz") as tar:
        assert tar.getnames() == ["model.onnx"]
    with tarfile.open(fileobj=io.BytesIO(transport_archive(xml)), mode="r:xz") as tar:
        assert sorted(tar.getnames()) == ["model.bin", "model.xml"]
