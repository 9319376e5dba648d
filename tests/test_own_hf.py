"""A new own model from its YAML through every command: a `transformers` DeiT encoder, a neck shared by
two of its three tasks (seg, depth) and one image-level task (cls) — `tests/hf_encoders.py`.

Scored once, then pruned from the scores file for two subsets with the masks that scoring directly
gives; budgets of all four kinds, the latency one measured in the runtime and thread count asked for
(read back from the file's record); exported to every runtime and benched. (`compare --config` with
every method and the control: `test_compare_own.py`.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import taskcut
from taskcut.cli import app

from taskcut.compact.masking import masks_of

from . import hf_encoders

runner = CliRunner()
@pytest.fixture()
def config(tmp_path: Path) -> Path:
    return hf_encoders.write_yaml(tmp_path)


def _ok(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_score_once_then_prune_two_subsets_as_scoring_them_directly(config: Path, tmp_path: Path) -> None:
    scores = tmp_path / "scores.safetensors"
    _ok("score", "--config", config, "--batches", "2", "--out", scores, "--quiet")
    for subset in ("seg,depth", "cls"):
        from_file, direct = tmp_path / f"f-{subset}.safetensors", tmp_path / f"d-{subset}.safetensors"
        _ok("prune", "--config", config, "--tasks", subset, "--sparsity", "0.6", "--scores", scores, "--out", from_file,
            "--quiet")
        _ok("prune", "--config", config, "--tasks", subset, "--sparsity", "0.6", "--batches", "2", "--out", direct,
            "--quiet")
        a, b = masks_of(taskcut.load(from_file, trust=True)), masks_of(taskcut.load(direct, trust=True))
        assert a and set(a) == set(b) and all(bool((a[n] == b[n]).all()) for n in a), subset


@pytest.mark.parametrize("budget, structured, extra", [
    ("params=0.4", False, []),
    ("size=0.5", False, []),
    ("macs=0.6", True, []),
    ("latency=10s", True, ["--runtime", "openvino", "--threads", "1"]),
])
def test_budgets_of_every_kind(config: Path, tmp_path: Path, budget: str, structured: bool, extra: list) -> None:
    out = tmp_path / "small.safetensors"
    _ok("prune", "--config", config, "--tasks", "seg,cls", "--budget", budget, "--batches", "2", "--out", out,
        "--quiet", *(["--structured"] if structured else []), *extra)
    report = taskcut.models.read_spec(out)["provenance"]["budget_report"]
    assert report["kind"] == budget.split("=")[0] and report["reached"] <= report["target"]
    if report["kind"] == "latency":  # a generous budget the dense model meets: where was it measured?
        assert report["sparsity"] == 0.0
        assert (report["runtime"], report["threads"], report["input"]) == ("openvino", 1, [1, 3, 32, 32])
    else:
        assert report["floor"] <= report["ratio"] <= 1.0


def test_export_to_every_runtime_and_bench(config: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.safetensors"
    _ok("prune", "--config", config, "--tasks", "seg,cls", "--sparsity", "0.5", "--structured", "--batches", "2",
        "--out", small, "--quiet")
    suffixes = {"onnx": "onnx", "executorch": "pte", "litert": "tflite", "openvino": "xml", "torchscript": "pt"}
    for fmt, suffix in suffixes.items():
        out = tmp_path / f"m.{suffix}"
        _ok("export", small, "--config", config, "--format", fmt, "--out", out)
        record = json.loads(out.with_name(out.name + ".taskcut.json").read_text())
        assert max(r["max_abs_diff"] for r in record["check"].values()) <= 1e-4, fmt
        assert set(record["evaluation"]["metrics"]) == {"seg", "cls"}, fmt  # in its runtime, on the test split
    stats = json.loads(_ok("bench", small, "--runtime", "onnxruntime", "--size", "32", "32", "--runs", "2", "--json",
                           "--trust-code"))
    assert stats["model"]["tasks"] == ["seg", "cls"] and stats["model"]["latency_ms_median"] > 0
