"""Progress a log can read: with stderr a file, a long stage prints plain lines (start, about every
10% or every N seconds, end) with step/total, elapsed time, rate and losses; never bar glyphs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from taskcut.progress import LogProgress

from .test_cli import _tiny_yaml

LINE = re.compile(r"^(?P<stage>[\w -]+): (?:(?:start|done|stopped) )?(?P<step>[\d.]+)/(?P<total>[\d.]+) "
                  r"\(\d+%\), (?P<m>\d+):(?P<s>\d\d) elapsed")


def test_training_in_a_log_prints_readable_lines_often_enough(tmp_path: Path, synth_dir: Path) -> None:
    """`taskcut train` with stderr redirected to a file, heartbeat every 1 s instead of 30 s: the stage's
    lines come at its start, at least every 10% and at its end, and no gap between lines (read as the
    file grows) is longer than the heartbeat plus a little."""
    log = tmp_path / "stderr.log"
    env = {**os.environ, "TASKCUT_PROGRESS_EVERY": "1"}
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "taskcut.cli", "train", "--config", str(_tiny_yaml(tmp_path)),
                                 "--data", f"synth:{synth_dir}", "--out", str(tmp_path / "m.safetensors"),
                                 "--steps", "40"], stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        arrival: list[float] = []  # when each line of the file was first seen
        while proc.poll() is None:
            count = len(log.read_text().splitlines())
            arrival += [time.monotonic()] * (count - len(arrival))
            time.sleep(0.05)
        assert proc.returncode == 0, log.read_text()
    text = log.read_text()
    assert "━" not in text and "…" not in text  # no bar rendered into the file
    matches = [(i, LINE.match(line)) for i, line in enumerate(text.splitlines())]
    train = [m for _, m in matches if m and m["stage"] == "train"]
    indices = [i for i, m in matches if m and m["stage"] == "train"]
    assert train[0].string.startswith("train: start 0/40") and train[-1].string.startswith("train: done 40/40")
    steps = [float(m["step"]) for m in train]
    assert all(b - a <= 4 for a, b in zip(steps, steps[1:])), steps  # at least every 10% of 40 steps
    assert "seg=" in train[-1].string and "/s" in train[-1].string  # losses and rate
    seen = [arrival[i] for i in indices if i < len(arrival)]
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert len(seen) >= len(indices) - 1 and max(gaps) < 1 + 1, gaps  # the heartbeat, plus polling slack


def test_a_slow_step_is_not_silent(capsys) -> None:
    """One step longer than the heartbeat: the heartbeat prints while it runs."""
    with LogProgress(every_s=0.3) as bar:
        job = bar.add_task("slow", total=2, info="")
        time.sleep(1.0)
        bar.update(job, advance=1, info="loss=1.000")
        bar.update(job, advance=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("slow: start 0/2")
    assert sum(line.startswith("slow: 0/2") for line in lines) >= 2  # heartbeats during the slow step
    assert lines[-1].startswith("slow: done 2/2") and "loss=1.000" in lines[-1]
