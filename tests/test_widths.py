"""The channel step a runtime runs convolutions in: chosen from timings, measured once per machine, used
by structured pruning where the runtime is known."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from taskcut.deploy.widths import STEPS, WIDTHS, channel_step, choose_step
from taskcut.errors import TaskcutError


def _blocks(step: int, noise: float = 0.03, seed: int = 0) -> dict[int, float]:
    """A runtime that computes output channels `step` at a time: a fixed cost plus a cost per block."""
    rng = random.Random(seed)
    return {w: (40.0 + 30.0 * -(-w // step)) * (1 + rng.uniform(-noise, noise)) for w in WIDTHS}


@pytest.mark.parametrize("step", [8, 16, 32])
def test_a_runtime_that_computes_blocks_of_channels_gets_that_step(step: int) -> None:
    for seed in range(5):
        assert choose_step(_blocks(step, seed=seed)) == step


def test_a_runtime_whose_time_grows_with_every_channel_gets_the_finest_step() -> None:
    assert choose_step({w: 40.0 + 12.0 * w for w in WIDTHS}) == STEPS[0]


def test_one_slow_width_does_not_decide_the_step() -> None:
    times = _blocks(16)
    times[8] *= 1.7  # a noisy moment while width 8 was timed
    assert choose_step(times) == 16


def _counting(times: dict[int, float]):
    calls = []

    def measure(runtime: str, threads: int, int8: bool) -> dict[int, float]:
        calls.append((runtime, threads, int8))
        return times
    return measure, calls


def test_the_step_is_measured_once_per_runtime_and_kept(tmp_path: Path) -> None:
    cache = tmp_path / "widths.json"
    measure, calls = _counting(_blocks(32))
    assert channel_step("onnxruntime", 2, cache=cache, measure=measure) == 32
    assert channel_step("onnxruntime", 2, cache=cache, measure=measure) == 32
    assert len(calls) == 1
    assert channel_step("onnxruntime", 1, cache=cache, measure=measure) == 32  # other threads: measured again
    assert channel_step("onnxruntime", 2, int8=True, cache=cache, measure=measure) == 32  # int8 too
    assert len(calls) == 3 and len(json.loads(cache.read_text())) == 3


@pytest.mark.parametrize("content", ["not json", "[1, 2]", "{KEY: 100000}", "{KEY: 16.0}", "{KEY: true}"])
def test_a_damaged_or_out_of_range_cache_is_measured_again(tmp_path: Path, content: str) -> None:
    cache = tmp_path / "widths.json"
    measure, calls = _counting(_blocks(16))
    channel_step("onnxruntime", 2, cache=cache, measure=measure)
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(content.replace("KEY", json.dumps(key)))
    assert channel_step("onnxruntime", 2, cache=cache, measure=measure) == 16
    assert len(calls) == 2 and json.loads(cache.read_text()) == {key: 16}


def test_a_step_is_measured_in_a_runtime_not_eager_torch(tmp_path: Path) -> None:
    with pytest.raises(TaskcutError, match="eager torch"):
        channel_step("torch", 2, cache=tmp_path / "w.json")
    with pytest.raises(TaskcutError, match="unknown runtime|runtime"):
        channel_step("tensorrt", 2, cache=tmp_path / "w.json")
    assert not (tmp_path / "w.json").exists()


def test_the_step_is_measured_in_onnx_runtime(tmp_path: Path) -> None:
    """The real probe: twelve one-layer files exported and timed in ONNX Runtime (about a second)."""
    cache = tmp_path / "widths.json"
    step = channel_step("onnxruntime", 2, cache=cache)
    assert step in STEPS and list(json.loads(cache.read_text()).values()) == [step]
