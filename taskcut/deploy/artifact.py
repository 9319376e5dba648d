"""What a device holds and uses: the file in its runtime's format, its download, and the runtime's memory.

A budget on a device with a runtime is about what that device gets, not taskcut's own file (packed
masks, storage for the next pruning step). Three figures of the exported file:

* installed bytes: the file (or the files: OpenVINO's .xml + .bin) the runtime loads;
* transport bytes: the same files as a deterministic `.tar.xz`, what an over-the-air update sends.
  A runtime that runs no sparse format stores an unstructured model dense, so unstructured
  sparsity counts here, as long runs of zeros compress;
* peak memory: what the runtime adds to a process to load the file and run it once on an input of
  the device's size, measured in a child process (its peak resident set after the imports, the
  peak reset once they are done, minus the resident set then), so this process's allocations and
  the runtime's import do not count; glibc's mmap threshold is fixed there (`MMAP_THRESHOLD`), so
  the figure does not depend on the order the runtime's threads happened to free its buffers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..cut.decompose import task_outputs
from ..errors import TaskcutError
from .formats import format_of_runtime

#: Seconds one memory probe may take (the runtime's import, loading the file, one run).
PROBE_SECONDS = 300
#: xz preset of the transport file: 0, xz's fastest (a budget search compresses every trial): on the demo's
#: robot file 2.5% larger than xz's default preset 6 in an eighth of the time (0.25 s against 1.9 s).
XZ_PRESET = 0
#: Probes whose median is the peak memory.
MEMORY_PROBES = 3
#: glibc's mmap threshold, fixed in a probe: by default it rises whenever a large buffer is freed, so which
#: buffers are served from the heap (and kept there) depends on the order the runtime's threads free
#: them, and the peak of one file varied by over 4% between runs (measured with ONNX Runtime on a tiny
#: model: 18.9 to 19.7 MB); fixed, by 0.7% (16.41 to 16.53 MB). A process with glibc's default can hold
#: more than the figure (there, up to 20%).
MMAP_THRESHOLD = 65536
#: What the median of the probes may still vary by between measurements.
MEMORY_NOISE = 0.015


@dataclass(frozen=True)
class Deployment:
    """Where a device runs its model: the runtime, int8 or fp32 (with the images int8 is calibrated on),
    and the threads it runs with."""

    runtime: str = "onnxruntime"
    int8: bool = False
    threads: int = 2
    calibration: torch.Tensor | None = None

    def calibration_for(self, example: torch.Tensor) -> torch.Tensor | None:
        """The int8 calibration images at `example`'s height and width (None for fp32): a file exported at
        another size than the data's (a latency budget at 224 x 224) is calibrated at its own size."""
        if not self.int8:
            return None
        if self.calibration is None:
            raise TaskcutError("an int8 deployment needs calibration images")
        return resized(self.calibration, tuple(example.shape[-2:]))

    def file_name(self) -> str:
        return f"model{format_of_runtime(self.runtime).suffix}"

    def describe(self) -> str:
        """`model.onnx in onnxruntime, int8, 2 threads`: what a figure was measured on."""
        if self.runtime == "torch":
            return f"the model in eager PyTorch, {self.threads} threads"
        return f"{self.file_name()} in {self.runtime}, {'int8' if self.int8 else 'fp32'}, {self.threads} threads"


def resized(images: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Images at `size` (height, width): int8 calibration at the size a file is exported for."""
    if tuple(images.shape[-2:]) != tuple(size):
        images = torch.nn.functional.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
    return images


def write_artifact(model: nn.Module, example: torch.Tensor, deployment: Deployment, folder: Path,
                   tasks: list[str] | None = None) -> Path:
    """Write `model` (baked: no masks) in the deployment's format into `folder`; the file the runtime opens.
    Its outputs are `tasks` in that order (default: the model's outputs on `example`)."""
    from .export import TupleOutputs

    form = format_of_runtime(deployment.runtime)
    if tasks is None:
        with torch.no_grad():
            tasks = list(task_outputs(model(example[:1])))
    path = Path(folder) / deployment.file_name()
    form.module().write(TupleOutputs(model, tasks).eval(), example[:1].contiguous(),
                        deployment.calibration_for(example), path, tasks)
    return path


def artifact_files(path: Path) -> list[Path]:
    """The files of an exported model: the one named and the companions its format loads with it (OpenVINO's
    .bin); not other files of the folder, whatever their names (another format's export of the same stem)."""
    from .export import companions
    from .formats import format_of_file

    path = Path(path)
    form = format_of_file(path)
    if form is None:
        raise TaskcutError(f"{path} is not an exported model file")
    return [path, *(p for p in companions(path, form) if p.is_file())]


def installed_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in artifact_files(path))


def transport_archive(path: Path) -> bytes:
    """The exported files as a `.tar.xz` with fixed metadata (names, no times or owners): the same bytes
    for the same model on every machine."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=XZ_PRESET) as tar:
        for file in artifact_files(path):
            info = tarfile.TarInfo(file.name)
            info.size, info.mode, info.mtime = file.stat().st_size, 0o644, 0
            with open(file, "rb") as f:
                tar.addfile(info, f)
    return buffer.getvalue()


def transport_bytes(path: Path) -> int:
    return len(transport_archive(path))


def write_transport(path: Path) -> Path:
    """Write the transport archive beside the exported file (`model.onnx.tar.xz`)."""
    from ..fileio import write_bytes

    out = Path(path).with_name(Path(path).name + ".tar.xz")
    write_bytes(out, transport_archive(path))
    return out


def peak_memory(path: Path, deployment: Deployment, input_shape: Sequence[int]) -> int:
    """Bytes the runtime adds to a fresh process to load `path` and run it once on zeros of `input_shape`:
    the median of `MEMORY_PROBES` fresh processes, run at the same time (a process's peak memory does not
    depend on the others; only the time would add up)."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(MEMORY_PROBES) as pool:
        peaks = list(pool.map(lambda _: _probe(path, deployment, input_shape), range(MEMORY_PROBES)))
    return int(statistics.median(peaks))


def _probe(path: Path, deployment: Deployment, input_shape: Sequence[int]) -> int:
    shape = [int(v) for v in input_shape]
    command = [sys.executable, "-m", "taskcut.deploy.memory_probe", str(path), deployment.runtime,
               str(deployment.threads), json.dumps(shape)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_SECONDS,
                              env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})
    except subprocess.TimeoutExpired:
        raise TaskcutError(f"measuring {deployment.runtime}'s memory on {Path(path).name} took over "
                           f"{PROBE_SECONDS} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TaskcutError(f"measuring {deployment.runtime}'s memory on {Path(path).name} failed: {last[:200]}")
    return int(json.loads(lines[-1])["peak_bytes"])


def measure_artifact(model: nn.Module, example: torch.Tensor, deployment: Deployment, what: str) -> float:
    """One figure of `model` deployed: "size" (installed bytes), "transport" or "memory"."""
    from .export import baked

    with tempfile.TemporaryDirectory() as tmp:
        path = write_artifact(baked(model).cpu(), example[:1].cpu(), deployment, Path(tmp))
        if what == "size":
            return float(installed_bytes(path))
        if what == "transport":
            return float(transport_bytes(path))
        if what == "memory":
            return float(peak_memory(path, deployment, example[:1].shape))
    raise AssertionError(what)
