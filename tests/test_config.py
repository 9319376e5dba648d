"""Presets and YAML configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskcut.config import load_config, preset_names
from taskcut.errors import TaskcutError


def test_shipped_presets_load() -> None:
    assert {"synth-tiny", "nyuv2", "cityscapes", "taskonomy"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.name == name
        assert cfg.model.tasks
    nyu = load_config("nyuv2")
    assert nyu.model.tasks["seg"].channels == 40
    assert nyu.loss_weights() == {"seg": 1.0, "normal": 20.0, "depth": 3.0}
    assert load_config("taskonomy").loss_weights() == {"seg": 1.0, "normal": 3.0, "depth": 2.0,
                                                       "keypoint": 7.0, "edge": 7.0}


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(TaskcutError, match="unknown preset 'nope'; presets: .*synth-tiny"):
        load_config("nope")


def test_user_yaml_overrides_its_preset(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: synth-tiny\ntrain:\n  steps: 7\ndata:\n  size: [32, 48]\n")
    cfg = load_config(None, path)
    assert cfg.train.steps == 7
    assert cfg.data.size == (32, 48)
    assert cfg.train.batch_size == load_config("synth-tiny").train.batch_size


@pytest.mark.parametrize("text,match", [
    ("preset: synth-tiny\ntrain:\n  stepz: 3\n", "train.stepz"),
    ("preset: synth-tiny\ndata:\n  size: [0, 64]\n", "positive"),
    ("preset: synth-tiny\ntrain: [\n", "not valid YAML"),
])
def test_invalid_yaml_gives_one_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(TaskcutError, match=match) as info:
        load_config(None, path)
    assert "\n" not in str(info.value)
