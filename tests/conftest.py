"""Shared fixtures: a small synth set on disk and a tiny model config, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskcut.config import ModelConfig, RunConfig
from taskcut.data.store import write_synth

COUNTS = {"train": 12, "val": 4, "test": 6}
SIZE = (32, 32)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    write_synth(root, COUNTS, SIZE, seed=3)
    return root


def tiny_model_config(tasks: dict | None = None) -> ModelConfig:
    tasks = tasks or {
        "seg": {"kind": "segmentation", "channels": 6},
        "normal": {"kind": "normal", "channels": 3},
        "depth": {"kind": "depth", "channels": 1},
        "keypoint": {"kind": "keypoint", "channels": 1},
        "edge": {"kind": "edge", "channels": 1},
    }
    return ModelConfig(depth=18, width=0.125, head_hidden=8, head_dilations=[1, 2], dropout=0.0, tasks=tasks)


def tiny_run_config(steps: int = 3) -> RunConfig:
    return RunConfig(name="tiny", model=tiny_model_config(),
                     data={"size": list(SIZE), "train": 12, "val": 4, "test": 6},
                     train={"steps": steps, "batch_size": 4, "val_every": 2, "lr": 1e-3})


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes into the user's cache (dense controls, generated data): one cache per test session."""
    monkeypatch.setenv("TASKCUT_CACHE", str(tmp_path_factory.getbasetemp() / "session-cache"))


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TASKCUT_CACHE", str(cache))
    return cache
