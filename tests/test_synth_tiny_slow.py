"""The synth-tiny preset learns every task (minutes; run with `python -m pytest -m slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskcut.config import load_config
from taskcut.experiments.pipeline import train_base


@pytest.mark.slow
def test_synth_tiny_clears_every_floor(tmp_path: Path, isolated_cache: Path) -> None:
    report = train_base(load_config("synth-tiny"), tmp_path / "base.safetensors", show_progress=False)
    failed = {k: (round(v["value"], 3), v["bar"]) for k, v in report["floors"].items() if not v["passed"]}
    assert len(report["floors"]) == 8
    assert not failed, failed
