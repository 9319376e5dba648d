"""The command line: happy paths end to end on tiny data, and bad input that writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app

from .conftest import tiny_run_config

runner = CliRunner()


def _tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(steps=3).model_dump(mode="json"), sort_keys=False))
    return path


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_data_synth_then_show(tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--train", "3", "--val", "1", "--test", "1",
                                 "--size", "24", "32", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == [24, 32] and manifest["splits"]["train"]["count"] == 3
    png = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "show", str(out), "--index", "2", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize("size", [["0", "64"], ["64", "-3"]])
def test_data_synth_bad_size(tmp_path: Path, size: list[str]) -> None:
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "set"), "--size", *size, "--quiet"])
    assert "positive" in _one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_data_show_index_out_of_range(synth_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "show", str(synth_dir), "--index", "99", "--out", str(tmp_path / "g.png")])
    assert "outside" in _one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_train_unknown_preset_lists_presets(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--preset", "nope", "--out", str(tmp_path / "m.safetensors")])
    line = _one_line_error(result)
    assert "synth-tiny" in line and "nyuv2" in line
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_existing_output(tmp_path: Path, synth_dir: Path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    result = runner.invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path)), "--data", f"synth:{synth_dir}",
                                 "--out", str(out), "--quiet"])
    assert "--force" in _one_line_error(result)
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "m.metrics.json").exists()


def test_train_missing_data_dir(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path)), "--data",
                                 f"synth:{tmp_path / 'nope'}", "--out", str(out), "--quiet"])
    assert "does not exist" in _one_line_error(result)
    assert not out.exists() and not (tmp_path / "m.metrics.json").exists()


def test_train_data_with_mismatched_manifest(tmp_path: Path, synth_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][0]["count"] = 99
    (data / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path)), "--data", f"synth:{data}",
                                 "--out", str(out), "--quiet"])
    assert "manifest says" in _one_line_error(result)
    assert not out.exists()


def test_train_end_to_end_then_info(tmp_path: Path, synth_dir: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path)), "--data", f"synth:{synth_dir}",
                                 "--out", str(out), "--steps", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    model = load(out)
    assert model.tasks == ["seg", "normal", "depth", "keypoint", "edge"]
    report = json.loads((tmp_path / "m.metrics.json").read_text())
    assert report["best_step"] in (2, 4)
    assert [h["step"] for h in report["history"]] == [2, 4]
    assert set(report["test"]) == set(model.tasks)
    assert report["trivial_test"]["most_frequent_class"]["seg"]["pixel_acc"] > 0.2
    assert set(report["floors"]) >= {"seg_miou", "seg_object_miou", "normal_angle_ratio", "depth_vs_mean",
                                     "depth_vs_mean_map", "edge_mse_ratio", "keypoint_mse_ratio"}
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0 and "parameters" in result.output and "best_step" in result.output


def test_train_with_generated_cached_data(tmp_path: Path, isolated_cache: Path) -> None:
    """Without --data, a synth config generates its set into the cache once and reuses it."""
    cfg = tiny_run_config(steps=2).model_dump(mode="json")
    cfg["data"].update({"train": 8, "val": 2, "test": 2, "size": [24, 24]})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for name in ("a", "b"):
        result = runner.invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / f"{name}.safetensors"),
                                     "--quiet"])
        assert result.exit_code == 0, result.output
    sets = [p for p in (isolated_cache / "data").iterdir() if not p.name.endswith(".lock")]
    assert len(sets) == 1
    assert json.loads((sets[0] / "manifest.json").read_text())["splits"]["train"]["count"] == 8
