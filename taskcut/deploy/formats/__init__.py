"""The file formats taskcut exports to, one module each, and the runtime that runs each.

Every format module offers the same three things: `write(wrapper, example, calibration, path)`
(an fp32 file, or int8 when `calibration` images are given), `open_runner(path, threads)` (a
callable from an image batch to the outputs in task order) and the constants below, so export,
parity checks, evaluation and benchmarks treat every runtime alike.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ...errors import TaskcutError


@dataclass(frozen=True)
class Format:
    name: str
    runtime: str          # the name `bench --runtime` knows it by
    suffix: str           # the file name ending the format's tools expect
    package: str          # the import that proves the runtime is installed
    extra: str            # the taskcut extra that installs it
    int8: bool            # whether taskcut can quantise to it
    fixed_batch: bool     # whether the file runs only the batch size it was exported with
    advice: str           # which devices it is for (README and --help)

    def module(self) -> ModuleType:
        # torchao (imported by the int8 paths) logs a warning per CUDA kernel library it cannot load on a
        # CPU machine; they say nothing about the export
        logging.getLogger("torchao").setLevel(logging.ERROR)
        need(self.package, self.extra)
        return importlib.import_module(f"{__name__}.{self.name}")


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", "onnxruntime", ".onnx", "onnxruntime", "", True, False,
           "servers, Windows/Linux edge boxes, anything with ONNX Runtime"),
    Format("executorch", "executorch", ".pte", "executorch", "executorch", True, False,
           "Android and iOS apps, microcontroller-class Linux (XNNPACK on Arm and x86)"),
    Format("litert", "litert", ".tflite", "ai_edge_litert", "litert", True, True,
           "Android, Coral and other TensorFlow Lite devices"),
    Format("openvino", "openvino", ".xml", "openvino", "openvino", True, False,
           "Intel CPUs, iGPUs and NPUs (edge PCs, industrial boxes)"),
    Format("torchscript", "torchscript", ".pt", "torch", "", False, False,
           "legacy LibTorch C++ apps only (deprecated by PyTorch for new deployments)"),
)}
RUNTIMES = ("torch",) + tuple(f.runtime for f in FORMATS.values() if f.name != "torchscript")


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise TaskcutError(f"unknown format {name!r}; formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_runtime(runtime: str) -> Format:
    for f in FORMATS.values():
        if f.runtime == runtime and f.name != "torchscript":
            return f
    raise TaskcutError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNTIMES)}")


def format_of_file(path: Path) -> Format | None:
    """The export format a file's name says it is in (None for anything else, such as a taskcut model)."""
    for f in FORMATS.values():
        if Path(path).name.endswith(f.suffix):
            return f
    return None


def need(module: str, extra: str = "") -> ModuleType:
    """A runtime, or one line saying what installs it: its taskcut extra, or (for the ONNX packages
    taskcut itself depends on, `extra` empty) the package."""
    try:
        return importlib.import_module(module)
    except ImportError:
        fix = f"pip install 'taskcut[{extra}]'" if extra else f"pip install {module} (taskcut depends on it)"
        raise TaskcutError(f"{module} is not installed: {fix}") from None
