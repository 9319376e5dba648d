"""The synth-tiny preset learns every task (minutes; run with `python -m pytest -m slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskcut.config import load_config
from taskcut.train.runs import train_base


@pytest.mark.slow
def test_synth_tiny_clears_every_floor(tmp_path: Path, isolated_cache: Path) -> None:
    report = train_base(load_config("synth-tiny"), tmp_path / "base.safetensors", show_progress=False)
    failed = {k: (round(v["value"], 3), v["bar"]) for k, v in report["floors"].items() if not v["passed"]}
    assert len(report["floors"]) == 8
    assert not failed, failed
    # every metric delta_T uses is better than the image-blind predictor of that task
    specs = load_config("synth-tiny").model.task_specs()
    for blind in report["trivial_test"].values():
        for task, metrics in blind.items():
            for metric in specs[task].metrics:
                if metric.in_delta and metric.name in metrics:
                    model, trivial = report["test"][task][metric.name], metrics[metric.name]
                    assert (model > trivial) if metric.higher_is_better else (model < trivial), (task, metric.name)
