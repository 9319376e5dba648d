"""`taskcut train --preset synth-tiny` on this machine reproduces the shipped model's test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskcut.cli import app
from taskcut.models import read_spec
from taskcut.models.pretrained import pretrained_path

#: A model trained on another CPU differs bit for bit; its figures stay close.
ABSOLUTE = {"miou": 0.03, "pixel_acc": 0.02}
RELATIVE = 0.10


@pytest.mark.slow
def test_training_the_preset_reproduces_the_shipped_metrics(tmp_path: Path, isolated_cache: Path) -> None:
    shipped = read_spec(pretrained_path("synth-tiny"))["provenance"]["test"]
    out = tmp_path / "again.safetensors"
    result = CliRunner().invoke(app, ["train", "--preset", "synth-tiny", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    fresh = json.loads((tmp_path / "again.metrics.json").read_text())["test"]
    for task, metrics in shipped.items():
        for name, value in metrics.items():
            bound = ABSOLUTE.get(name, RELATIVE * max(abs(value), 1e-3))
            assert abs(fresh[task][name] - value) <= bound, (task, name, fresh[task][name], value)
