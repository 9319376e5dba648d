"""Latency, parameters, MACs and file size of a model or an exported file, optionally against another
(`taskcut bench`)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..cut.decompose import task_outputs
from ..errors import TaskcutError
from ..hooks import forward_hooks
from .artifact import Deployment, installed_bytes, resized, write_artifact
from .export import baked, model_data, open_runner, record_path, training_images
from .formats import FORMATS, RUNTIMES, format_of_file, format_of_runtime
from ..models import load, read_spec


def count_macs(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-accumulates of convolutions and linear layers for one forward pass (zeros counted)."""
    total = 0

    def conv(mod: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    with forward_hooks([m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))], conv), torch.no_grad():
        model(image)
    return total


def check_runtime(runtime: str, int8: bool = False) -> None:
    if runtime != "torch":
        form = format_of_runtime(runtime)
        if int8 and not form.int8:
            raise TaskcutError(f"--int8 is not available for runtime {runtime}")
        form.module()
    elif int8:
        offered = ", ".join(f.runtime for f in FORMATS.values() if f.int8)
        raise TaskcutError(f"--int8 runs in an edge runtime, not eager torch; runtimes with int8: {offered}")


#: Most input channels an export record may declare (images have 1 to 4; a few more for stacked inputs).
MAX_CHANNELS = 64


def check_timing(threads: int, size: tuple[int, int] | list[int] | None = None, runs: int = 1,
                 warmup: int = 0) -> None:
    """Numbers that size a thread pool or an input, bounded before use wherever they come from (an option,
    a fleet file, an export record): 100000 threads crash the runtime, a 100000-pixel side asks for 120 GB."""
    from ..settings import MAX_IMAGE_SIDE, MAX_RUNS, MAX_THREADS

    if isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise TaskcutError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    if isinstance(runs, bool) or not 1 <= runs <= MAX_RUNS or not 0 <= warmup <= MAX_RUNS:
        raise TaskcutError(f"runs must be between 1 and {MAX_RUNS}, got {runs}")
    if size is not None:
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_IMAGE_SIDE
                                 for v in size):
            raise TaskcutError(f"an input size is two integers from 1 to {MAX_IMAGE_SIDE}, got {list(size)}")


def measure(path: Path, runtime: str | None = None, threads: int = 2, size: tuple[int, int] | None = None,
            warmup: int = 3, runs: int = 10, int8: bool = False, data: str | None = None,
            source: Any = None) -> dict[str, Any]:
    """Median and minimum latency over warm runs (batch 1) and file size of a taskcut model file run in
    `runtime` (exported on the fly; int8 calibrated on `data`, default the model's own), or of an exported
    file run in its own runtime; parameters and MACs where the file is a taskcut model. An own model's
    file is measured with its `source` (`taskcut.jobs.source.YamlSource`): its code trusted, its data's
    input timed (or one of `size`), int8 calibrated on its train split."""
    check_timing(threads, size, runs, warmup)
    path = Path(path)
    if not path.is_file():
        raise TaskcutError(f"{path} does not exist")
    form = format_of_file(path)
    if form is not None:
        return _measure_file(path, form, runtime, threads, size, warmup, runs, int8)
    runtime = runtime or "onnxruntime"
    check_runtime(runtime, int8)
    spec = read_spec(path)  # a clear error for anything that is not a taskcut model
    if source is not None:
        model = baked(source.open_model(path, "cpu")[0].model)
        image = source.bench_input(size)
        size = tuple(image.shape[-2:])
    else:
        size = size or (224, 224)
        model = baked(load(path))
        image = torch.rand(1, 3, *size)
    with torch.no_grad():
        tasks = list(task_outputs(model(image)))
    stats: dict[str, Any] = {
        "model": str(path), "tasks": tasks, "parameters": sum(p.numel() for p in model.parameters()),
        "nonzero_parameters": sum(int((p != 0).sum()) for p in model.parameters()),
        "macs": count_macs(model, image), "file_bytes": path.stat().st_size, "runtime": runtime, "int8": int8,
        "threads": threads, "size": list(size),
    }
    calibration = None
    if int8:
        calibration = resized(source.calibration_images(), size) if source is not None else \
            _calibration(spec, data, size, path, model.config.task_specs())
    times, exported = latencies(model, image, runtime, threads, warmup, runs, tasks, calibration)
    if exported is not None:
        stats["export_bytes"] = exported
    stats["latency_ms_median"] = statistics.median(times) * 1e3
    stats["latency_ms_min"] = min(times) * 1e3
    return stats


def _calibration(spec: dict[str, Any], data: str | None, size: tuple[int, int], path: Path,
                 specs: Any) -> torch.Tensor:
    data = data or model_data(spec)
    if data is None:
        raise TaskcutError(f"--int8 calibrates on training images: pass --data (no data recorded in {path})")
    return resized(training_images(data, specs), size)


def _measure_file(path: Path, form: Any, runtime: str | None, threads: int, size: tuple[int, int] | None,
                  warmup: int, runs: int, int8: bool) -> dict[str, Any]:
    if runtime is not None and runtime != form.runtime:
        raise TaskcutError(f"{path.name} is a {form.name} file; it runs in {form.runtime}, not {runtime}")
    if int8:
        raise TaskcutError(f"{path.name} is already exported; --int8 applies when benching a taskcut model file")
    record = _record(path)
    shape = record.get("input")
    if size is None and shape is None:
        raise TaskcutError(f"{path.name} has no {record_path(path).name} beside it: pass --size H W")
    if shape is not None and (not isinstance(shape, list) or len(shape) != 3
                              or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
                              or not 1 <= shape[0] <= MAX_CHANNELS):
        raise TaskcutError(f"{record_path(path).name}: input {shape!r} is not [channels (1 to {MAX_CHANNELS}), "
                           "height, width]")
    channels = shape[0] if shape else 3
    size = size or (shape[1], shape[2])
    check_timing(threads, size, runs, warmup)
    runner = open_runner(path, form, threads, record.get("tasks"))
    image = np.random.default_rng(0).random((1, channels, *size), dtype=np.float32)
    times = _time(lambda: runner(image), warmup, runs)
    return {"model": str(path), "tasks": record.get("tasks"), "format": form.name, "runtime": form.runtime,
            "int8": record.get("int8"), "file_bytes": installed_bytes(path),
            "threads": threads, "size": list(size), "latency_ms_median": statistics.median(times) * 1e3,
            "latency_ms_min": min(times) * 1e3}


def _record(path: Path) -> dict[str, Any]:
    record = record_path(path)
    if not record.is_file():
        return {}
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        raise TaskcutError(f"{record} is not a taskcut export record") from None


def latencies(model: nn.Module, image: torch.Tensor, runtime: str = "onnxruntime", threads: int = 2,
              warmup: int = 3, runs: int = 10, tasks: list[str] | None = None,
              calibration: torch.Tensor | None = None) -> tuple[list[float], int | None]:
    """Seconds of each of `runs` warm runs of a (baked) model on `image` in `runtime`, and the bytes of
    the file it ran from (None for eager torch). With `calibration` images the file is int8."""
    if runtime not in RUNTIMES:
        raise TaskcutError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNTIMES)}")
    check_timing(threads, tuple(image.shape[-2:]), runs, warmup)
    if runtime == "torch":
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return _time(lambda: model(image), warmup, runs), None
        finally:
            torch.set_num_threads(previous)
    form = format_of_runtime(runtime)
    if tasks is None:
        with torch.no_grad():
            tasks = list(task_outputs(model(image)))
    deployment = Deployment(runtime, calibration is not None, threads, calibration)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_artifact(model, image, deployment, Path(tmp), tasks)
        runner = open_runner(path, form, threads, tasks)
        feed = image.numpy()
        return _time(lambda: runner(feed), warmup, runs), installed_bytes(path)


def _time(fn: Callable[[], Any], warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ratios(stats: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    keys = ("parameters", "nonzero_parameters", "macs", "file_bytes", "export_bytes", "latency_ms_median",
            "latency_ms_min")
    return {k: stats[k] / other[k] for k in keys if k in stats and k in other and other[k]}
