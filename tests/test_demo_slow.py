"""`taskcut demo` from an empty cache: the compact {seg, depth} model at 70% keeps delta_T >= -3%."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskcut.experiments.demo import demo


@pytest.mark.slow
def test_demo_meets_the_bar(tmp_path: Path, isolated_cache: Path) -> None:
    result = demo(tmp_path / "demo", show_progress=False)
    assert result["base_trained_now"]
    assert abs(result["prune"]["achieved"] - 0.7) <= 1e-3
    assert result["finetuned_delta_T"] >= -3.0, result["finetuned_per_task"]
    assert (tmp_path / "demo" / "report.md").is_file()
    assert set(result["comparison"]) == {"dense+ft", "cut", "magnitude", "random"}  # with the control
    assert result["comparison"]["dense+ft"]["delta_T_control"] == 0.0
    assert abs(result["finetuned_delta_T_control"]) < 10.0 and "dense + same fine-tuning (control)" in \
        (tmp_path / "demo" / "report.md").read_text()
    assert (tmp_path / "demo" / "compare" / "report.html").is_file()
    again = demo(tmp_path / "demo", show_progress=False)  # data and base model come from the cache
    assert not again["base_trained_now"]
