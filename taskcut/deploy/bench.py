"""Latency, parameters, MACs and file size of a model file, optionally against another (`taskcut bench`)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cut.decompose import task_outputs
from ..errors import TaskcutError
from .export import TupleOutputs, _onnx, baked, ort_session
from ..models import load

RUNTIMES = ("torch", "onnxruntime")


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

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for h in hooks:
            h.remove()
    return total


def measure(path: Path, runtime: str = "onnxruntime", threads: int = 2, size: tuple[int, int] = (224, 224),
            warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """One model file: median and minimum latency over warm runs (batch 1), parameters, MACs, file size."""
    if runtime not in RUNTIMES:
        raise TaskcutError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNTIMES)}")
    if threads < 1 or warmup < 0 or runs < 1:
        raise TaskcutError("--threads and --runs must be at least 1")
    model = baked(load(path))
    image = torch.rand(1, 3, *size)
    with torch.no_grad():
        tasks = list(task_outputs(model(image)))
    stats: dict[str, Any] = {
        "model": str(path), "tasks": tasks, "parameters": sum(p.numel() for p in model.parameters()),
        "nonzero_parameters": sum(int((p != 0).sum()) for p in model.parameters()),
        "macs": count_macs(model, image), "file_bytes": path.stat().st_size, "runtime": runtime,
        "threads": threads, "size": list(size),
    }
    times = latencies(model, image, runtime, threads, warmup, runs, tasks)
    stats["latency_ms_median"] = statistics.median(times) * 1e3
    stats["latency_ms_min"] = min(times) * 1e3
    return stats


def latencies(model: nn.Module, image: torch.Tensor, runtime: str = "onnxruntime", threads: int = 2,
              warmup: int = 3, runs: int = 10, tasks: list[str] | None = None) -> list[float]:
    """Seconds of each of `runs` warm runs of a (baked) model on `image` in `runtime`."""
    if runtime not in RUNTIMES:
        raise TaskcutError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNTIMES)}")
    if runtime == "torch":
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return _time(lambda: model(image), warmup, runs)
        finally:
            torch.set_num_threads(previous)
    if tasks is None:
        with torch.no_grad():
            tasks = list(task_outputs(model(image)))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        _onnx(TupleOutputs(model, tasks).eval(), image, onnx_path)
        session = ort_session(onnx_path, threads)
        feed = {"image": image.numpy()}
        return _time(lambda: session.run(None, feed), warmup, runs)


def measure_onnx_file(path: Path, threads: int = 2, size: tuple[int, int] = (224, 224), warmup: int = 3,
                      runs: int = 10) -> dict[str, Any]:
    """Latency of an already exported ONNX file (for int8 models, which have no taskcut file)."""
    session = ort_session(path, threads)
    feed = {"image": torch.rand(1, 3, *size).numpy()}
    times = _time(lambda: session.run(None, feed), warmup, runs)
    return {"model": str(path), "file_bytes": path.stat().st_size, "runtime": "onnxruntime", "threads": threads,
            "latency_ms_median": statistics.median(times) * 1e3, "latency_ms_min": min(times) * 1e3}


def _time(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ratios(stats: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    keys = ("parameters", "nonzero_parameters", "macs", "file_bytes", "latency_ms_median", "latency_ms_min")
    return {k: stats[k] / other[k] for k in keys if k in stats and k in other and other[k]}
