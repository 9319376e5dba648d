"""Progress of long work: bars on a terminal, plain lines in a log, nothing when asked.

A rich bar redrawn in place is unreadable in a log file (it prints once, at the end, cut to
the width of an absent terminal). When stderr is not a terminal, each stage prints plain
lines instead: one at its start, one about every 10% of its steps or `LOG_EVERY_S` seconds
(whichever comes first; a heartbeat thread prints even when one step is slow), and one at
its end, each with step/total, elapsed time, rate and the stage's last figures (losses).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rich.console import Console

console = Console(stderr=True)

#: Longest silence of a stage in a log, in seconds (`TASKCUT_PROGRESS_EVERY` overrides it).
LOG_EVERY_S = 30.0


def progress_bar(enabled: bool = True) -> Any:
    """A bar with a free-text field (`info`) for per-task losses and the like; plain lines when stderr
    is no terminal. Both offer `add_task(description, total=, completed=, info=)` and
    `update(job, advance=, info=)` inside a `with` block."""
    if enabled and not console.is_terminal:
        return LogProgress()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, disable=not enabled, transient=False,
    )


class _Stage:
    def __init__(self, description: str, total: float | None, completed: float, info: str) -> None:
        self.description, self.total, self.completed, self.info = description, total, completed, info
        self.start = time.monotonic()
        self.first = completed
        self.printed_at = self.start
        self.printed_fraction = 0.0
        self.done = False


class LogProgress:
    """Plain progress lines for logs, with the part of rich's `Progress` interface taskcut uses."""

    def __init__(self, every_s: float | None = None) -> None:
        self.every_s = every_s if every_s is not None else float(os.environ.get("TASKCUT_PROGRESS_EVERY", LOG_EVERY_S))
        self._stages: list[_Stage] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> "LogProgress":
        self._heartbeat = threading.Thread(target=self._beat, name="taskcut-progress", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            for stage in self._stages:
                if not stage.done:
                    self._print(stage, "stopped" if exc[0] is not None else "done")
                    stage.done = True

    def add_task(self, description: str, total: float | None = None, completed: float = 0, info: str = "",
                 **_: Any) -> int:
        with self._lock:
            stage = _Stage(description, total, completed, info)
            self._stages.append(stage)
            self._print(stage, "start")
            return len(self._stages) - 1

    def update(self, job: int, advance: float = 0, info: str | None = None, **_: Any) -> None:
        with self._lock:
            stage = self._stages[job]
            stage.completed += advance
            if info is not None:
                stage.info = info
            if stage.total and stage.completed >= stage.total and not stage.done:
                self._print(stage, "done")
                stage.done = True
                return
            fraction = stage.completed / stage.total if stage.total else 0.0
            if fraction - stage.printed_fraction >= 0.1 - 1e-9 or time.monotonic() - stage.printed_at >= self.every_s:
                self._print(stage, "")

    def _beat(self) -> None:
        """Print a stage that has been silent for `every_s` (a slow step, a long evaluation inside one)."""
        while not self._stop.wait(min(1.0, self.every_s / 4)):
            with self._lock:
                for stage in self._stages:
                    if not stage.done and time.monotonic() - stage.printed_at >= self.every_s:
                        self._print(stage, "")

    def _print(self, stage: _Stage, event: str) -> None:
        now = time.monotonic()
        elapsed = now - stage.start
        total = f"/{stage.total:g}" if stage.total else ""
        percent = f" ({100 * stage.completed / stage.total:.0f}%)" if stage.total else ""
        rate = (stage.completed - stage.first) / elapsed if elapsed > 0 else 0.0
        parts = [f"{stage.description}: {event + ' ' if event else ''}{stage.completed:g}{total}{percent}",
                 f"{_clock(elapsed)} elapsed"]
        if event != "start" and rate > 0:
            parts.append(f"{rate:.3g}/s")
        if stage.info:
            parts.append(stage.info.strip())
        console.out(", ".join(parts), highlight=False)
        stage.printed_at = now
        stage.printed_fraction = stage.completed / stage.total if stage.total else 0.0


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}:{sec:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{sec:02d}"
