"""OpenVINO IR (FILE.xml with its weights in FILE.bin beside it), compiled for the CPU.

Two settings give parity with eager fp32: weights saved uncompressed (the IR writer stores fp16
by default) and the f32 inference precision hint (the CPU plugin runs bf16 where the CPU
has it). int8 reads the ONNX Runtime QDQ model, whose quantise/dequantise pairs OpenVINO runs
as int8 kernels, so both runtimes share one calibration.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def write(wrapper: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None, path: Path,
          tasks: list[str]) -> None:
    import openvino as ov

    from . import onnx as onnx_format

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.onnx"
        onnx_format.write(wrapper, example, calibration, source, tasks)
        model = ov.convert_model(str(source))
    for output, task in zip(model.outputs, tasks):
        output.get_tensor().set_names({task})
    ov.save_model(model, str(path), compress_to_fp16=False)


def open_runner(path: Path, threads: int | None = None,
                tasks: list[str] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    import openvino as ov

    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(images: np.ndarray) -> list[np.ndarray]:
        result = request.infer([np.ascontiguousarray(images)])
        return [np.array(result[o]) for o in outputs]

    return run


def output_names(path: Path) -> list[str]:
    import openvino as ov

    return [o.get_any_name() for o in ov.Core().read_model(str(path)).outputs]


def companions(path: Path) -> list[Path]:
    """Files that belong with the IR: its weights."""
    return [path.with_suffix(".bin")]
