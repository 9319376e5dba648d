"""`taskcut compare --config own.yaml`: an own model compared with every method and the control, on the
same code path as the zoo; the options that cannot apply are refused in one line with nothing written.

The own model is `tests/hf_encoders.py`'s: a `transformers` encoder (DeiT), a neck shared by two of
its three tasks (seg, depth) and one image-level task (cls)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import taskcut
from taskcut.cli import app
from taskcut.workflows.methods import METHODS

from . import hf_encoders

runner = CliRunner()
_config = hf_encoders.write_yaml


def test_compare_an_own_model_with_every_method_and_the_control(tmp_path: Path) -> None:
    config, out = _config(tmp_path), tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "--config", str(config), "--tasks", "seg,cls", "--sparsities", "0.5",
                                 "--seeds", "0", "--finetune-steps", "2", "--batches", "2", "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in taskcut.workflows.compare.read_rows(out / "results.csv")}
    assert set(rows) == {*METHODS, "dense+ft"}
    for method in METHODS:
        assert abs(rows[method]["achieved_sparsity"] - 0.5) < 2e-3
        assert "delta_T_control" in rows[method] and "seg.miou" in rows[method] and "cls.accuracy" in rows[method]
    assert rows["dense+ft"]["achieved_sparsity"] == 0.0
    assert (out / "report.html").is_file() and (out / "results.md").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["config"] == str(config) and settings["tasks"] == ["seg", "cls"]
    compact = taskcut.load(out / "models" / "cut-s0.5-seed0.safetensors", trust=True)
    assert taskcut.models.read_spec(out / "models" / "cut-s0.5-seed0.safetensors")["model"]["kwargs"] == \
        {"family": "deit"}
    assert set(compact(taskcut.models.own_config.first_input(
        taskcut.models.own_config.load_own_config(config)))) == {"seg", "cls"}


def test_compare_refuses_what_an_own_model_cannot_apply(tmp_path: Path) -> None:
    config = _config(tmp_path)
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"not read")
    for extra, word in ((["--data", "synth:x"], "--data"), ([str(base)], "the model file"), (["--finetunes", "distill", "--distill-features", "1"],
                                                          "--distill-features")):
        out = tmp_path / f"cmp-{word.strip('-')[:5]}"
        result = runner.invoke(app, ["compare", "--config", str(config), "--tasks", "seg", "--out", str(out),
                                     *extra])
        assert result.exit_code == 2, result.output
        assert word in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists()
