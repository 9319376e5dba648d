"""ONNX, run by ONNX Runtime; int8 is static QDQ that runs every convolution quantised.

ONNX Runtime fuses a DequantizeLinear -> Conv -> QuantizeLinear group into one QLinearConv only
when the activations are unsigned 8-bit (its x86 kernels are u8 x s8): with the default signed
activations about half the convolutions stay float and int8 is no faster than fp32. Shape
inference and graph pre-processing first let the quantiser see every tensor's shape and
the folded BatchNorms.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..onnx_siblings import merge_file


def write(wrapper: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None, path: Path,
          tasks: list[str]) -> None:
    axes = {"image": {0: "batch"}, **{t: {0: "batch"} for t in tasks}}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is one fused op ONNX has no equivalent of;
    # the plain path is the same computation in exportable ops
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export(wrapper, example[:1], path, tasks, axes)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    wrapper.eval()  # the exporter restores the mode it found; keep eval whatever that was
    if calibration is None:  # task heads' narrow first convolutions run as one wide one (the same outputs)
        merge_file(path)
    else:
        quantise(path, calibration)


#: The TorchScript exporter at opset 17 first (what every earlier file was made with); a model it cannot
#: export (an op added in a later opset: col2im, antialiased bicubic resizing) goes through the dynamo
#: exporter at opset 18.
OPSETS = ((17, False), (18, True))


def _export(wrapper: nn.Module, example: torch.Tensor, path: Path, tasks: list[str],
            axes: dict[str, dict[int, str]]) -> None:
    from ...errors import TaskcutError

    reasons = []
    for opset, dynamo in OPSETS:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, (example,), str(path), input_names=["image"], output_names=tasks,
                                  dynamic_axes=axes, opset_version=opset, dynamo=dynamo,
                                  **({"verbose": False, "report": False} if dynamo else {}))
            return
        except Exception as exc:  # noqa: BLE001 — the exporters raise many types; the next one is tried
            path.unlink(missing_ok=True)
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            reasons.append(f"opset {opset} ({'dynamo' if dynamo else 'TorchScript'}): {type(exc).__name__}: {first}")
    raise TaskcutError(f"ONNX export failed at every opset tried: {'; '.join(reasons)}")


def quantise(path: Path, calibration: torch.Tensor) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": calibration[i:i + 1].numpy()} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    fp32 = path.with_name(path.name + ".fp32.onnx")
    prepared = path.with_name(path.name + ".pre.onnx")
    path.rename(fp32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        fp32.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)


def session(path: Path, threads: int | None = None, optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # do not slow torch runs after it
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def open_runner(path: Path, threads: int | None = None,
                tasks: list[str] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    s = session(path, threads)
    name = s.get_inputs()[0].name
    return lambda images: s.run(None, {name: images})


def output_names(path: Path) -> list[str]:
    return [o.name for o in session(path).get_outputs()]


def convolutions(path: Path) -> dict[str, int]:
    """How the convolutions of a file run after ONNX Runtime's graph optimisation: `quantised`
    (QLinearConv or a quantised fused conv) against `float` (Conv / FusedConv)."""
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, 1, optimized)
        graph = onnx.load(str(optimized)).graph
    ops = [n.op_type for n in graph.node]
    return {"quantised": sum(op in ("QLinearConv", "ConvInteger") for op in ops),
            "float": sum(op in ("Conv", "FusedConv", "NhwcFusedConv") for op in ops)}
