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
    assert STEPS[0] == 8 and choose_step({w: 40.0 + 12.0 * w for w in WIDTHS}) == 8


@pytest.mark.parametrize("width", [8, 16, 32, 40, 64])
@pytest.mark.parametrize("factor", [1.7, 0.6])
def test_one_slow_or_fast_width_does_not_decide_the_step(width: int, factor: float) -> None:
    """A noisy moment while one width was timed, the top of its block included."""
    for step in (16, 32):
        times = _blocks(step)
        times[width] *= factor
        assert choose_step(times) == step, (step, width, factor)


def test_a_run_with_slow_widths_recorded_here_gives_the_step() -> None:
    """OpenVINO fp32 timed on this machine (us): 20, 28 and 56 came out slow in all three sessions."""
    recorded = ("4:194 8:181 12:196 16:196 20:305 24:202 28:312 32:195 36:254 40:254 44:255 48:252 52:323 56:551 "
                "60:322 64:314")
    assert choose_step({int(w): float(t) for w, t in (p.split(":") for p in recorded.split())}) == 16


def test_blocks_that_differ_by_a_tenth_are_not_one_block() -> None:
    """OpenVINO int8 here: 16 channels cost 159 us, 32 cost 175: rounding 16 up to 32 is not free."""
    times = {w: 159.0 if w <= 16 else 176.0 if w <= 32 else 197.0 if w <= 48 else 214.0 for w in WIDTHS}
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


@pytest.mark.parametrize("content", ["not json", "[1, 2]", "{KEY: 100000}", "{KEY: 16.0}", "{KEY: true}",
                                     "[" * 600_000, "{KEY: 16, " + '"x": 1, ' * 20_000 + '"y": 1}'])
def test_a_damaged_or_out_of_range_cache_is_measured_again(tmp_path: Path, content: str) -> None:
    cache = tmp_path / "widths.json"
    measure, calls = _counting(_blocks(16))
    channel_step("onnxruntime", 2, cache=cache, measure=measure)
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(content.replace("KEY", json.dumps(key)))
    assert channel_step("onnxruntime", 2, cache=cache, measure=measure) == 16
    assert len(calls) == 2 and json.loads(cache.read_text()) == {key: 16}


def test_a_cache_that_is_not_a_file_is_not_read(tmp_path: Path) -> None:
    import os

    cache = tmp_path / "widths.json"
    os.mkfifo(cache)  # reading it would wait for a writer for ever
    measure, calls = _counting(_blocks(16))
    assert channel_step("onnxruntime", 2, cache=cache, measure=measure) == 16 and len(calls) == 1


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


def test_a_prune_in_a_runtime_keeps_the_step_measured_for_it(isolated_cache: Path, synth_dir: Path,
                                                             tmp_path: Path) -> None:
    """A cached step of 32 (one no CPU default gives) is what a runtime budget's structured cut keeps."""
    import torch
    from typer.testing import CliRunner

    from taskcut.cli import app
    from taskcut.compact.structured import rounding
    from taskcut.models import build_model, load, read_spec, save

    from .conftest import tiny_model_config

    measure, _ = _counting(_blocks(32))
    assert channel_step("onnxruntime", 2, measure=measure) == 32  # into $TASKCUT_CACHE, as a first prune would
    torch.manual_seed(0)
    dense = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})).eval()
    base = save(dense, tmp_path / "base.safetensors")
    out = tmp_path / "small.safetensors"
    result = CliRunner().invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--budget", "size=0.6",
                                      "--structured", "--runtime", "onnxruntime", "--data", f"synth:{synth_dir}",
                                      "--batches", "2", "--batch-size", "4", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    provenance = read_spec(out)["provenance"]
    report = provenance["budget_report"]
    used = provenance["round_to"]
    assert used == report["round_to"]  # the measured step, or 8 where its coarse moves missed the window (said)
    assert used == 32 or (used == 8 and "channel step of 32" in report["note"]), report
    widths = {n: m.out_channels for n, m in load(out).named_modules() if isinstance(m, torch.nn.Conv2d)}
    before = {n: m.out_channels for n, m in dense.named_modules() if isinstance(m, torch.nn.Conv2d)}
    cut = {n: w for n, w in widths.items() if w < before[n]}
    assert cut, "the budget cut no channels"
    for name, width in cut.items():  # each group keeps multiples of the rounding its width gets at that step
        assert width % rounding(before[name], used) == 0, (name, width, before[name], used)


def test_a_step_too_coarse_for_the_budget_falls_back_to_8_and_says_so() -> None:
    """At a step of 32 this small model's parameters jump from 0.42 to 0.50 of the dense model's: a budget of
    0.46 is met within its window only at multiples of 8; a budget the step can meet keeps the step."""
    import copy

    import torch

    from taskcut.cut.prune import prune_to_budget
    from taskcut.cut.score import prunable_parameters
    from taskcut.cut.select import select
    from taskcut.models import build_model

    from .conftest import tiny_model_config

    torch.manual_seed(0)
    dense = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 32})).eval()
    small = select(dense, ["seg", "depth"]).model
    g = torch.Generator().manual_seed(0)
    scores = {t: {n: torch.rand(p.shape, generator=g, dtype=torch.float64)
                  for n, p in prunable_parameters(small).items()} for t in ("seg", "depth")}
    x = torch.rand(1, 3, 32, 32)
    _, report = prune_to_budget(copy.deepcopy(small), scores, "params=0.46", structured=True, example=x, round_to=32)
    assert report["round_to"] == 8 and "channel step of 32" in report["note"], report
    assert 0.97 <= report["ratio"] <= 1.0
    _, report = prune_to_budget(copy.deepcopy(small), scores, "params=0.51", structured=True, example=x, round_to=32)
    assert report["round_to"] == 32 and "note" not in report and 0.97 <= report["ratio"] <= 1.0, report
