"""Export a taskcut model to ONNX or TorchScript, and prove the file computes what eager PyTorch does.

Outputs are named by task and the batch axis is dynamic. After every export the file is run
on sample inputs (onnxruntime or the TorchScript runtime) and compared with the eager model:
fp32 must agree to 1e-4 (max absolute difference) or the export fails and nothing is left
behind. `--int8` quantises the ONNX model statically (QDQ, per-channel weights, calibrated on
sample images) and reports per-task agreement instead: argmax agreement for segmentation,
relative error for dense outputs.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..compact.masking import unmask
from ..errors import TaskcutError
from ..fileio import atomic_path, check_writable
from ..cut.decompose import task_outputs
from ..models import load, read_spec

FORMATS = ("onnx", "torchscript")
PARITY = 1e-4


class TupleOutputs(nn.Module):
    """The model with outputs as a tuple in task order: what ONNX and TorchScript need."""

    def __init__(self, model: nn.Module, tasks: list[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(tasks) if tasks is not None else list(model.tasks)  # type: ignore[arg-type]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(out[t] for t in self.tasks)


def baked(model: nn.Module) -> nn.Module:
    """A copy with masks multiplied into plain weights (exporters see ordinary parameters)."""
    model = copy.deepcopy(model).eval()
    unmask(model)
    return model


def sample_inputs(size: tuple[int, int], n: int = 4, seed: int = 0) -> torch.Tensor:
    """Synth scenes as sample and calibration images (no data set needed)."""
    from ..data.synth import render

    return torch.from_numpy(np.stack([render(seed, "test", i, *size)["image"] for i in range(n)]))


def export(model_path: Path, fmt: str, out: Path, int8: bool = False, size: tuple[int, int] = (64, 64),
           force: bool = False) -> dict[str, Any]:
    """Export and check; returns the parity (fp32) or agreement (int8) figures per task."""
    if fmt not in FORMATS:
        raise TaskcutError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise TaskcutError("--int8 is available for --format onnx only")
    if size[0] <= 0 or size[1] <= 0:
        raise TaskcutError(f"--size must be positive, got {size[0]} {size[1]}")
    out = Path(out)
    check_writable(out, force)
    read_spec(model_path)  # a clear error for anything that is not a taskcut model
    model = load(model_path)
    kinds = {n: t.kind for n, t in model.config.tasks.items()}
    return export_module(model, out, sample_inputs(size), fmt, int8, kinds)


def export_module(model: nn.Module, out: Path, samples: torch.Tensor, fmt: str = "onnx", int8: bool = False,
                  kinds: dict[str, str] | None = None) -> dict[str, Any]:
    """Export any model returning `{task: tensor}`, run the file on `samples` and compare with eager.

    fp32 must agree within `PARITY` or nothing is written; with `int8` (ONNX) the agreement
    per task is returned instead (argmax agreement for tasks of kind segmentation or
    classification in `kinds`, relative error otherwise).
    """
    if fmt not in FORMATS:
        raise TaskcutError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise TaskcutError("--int8 is available for --format onnx only")
    model = baked(model)
    with torch.no_grad():
        tasks = list(task_outputs(model(samples[:1])))
    wrapper = TupleOutputs(model, tasks).eval()
    with torch.no_grad():
        reference = wrapper(samples)
    with atomic_path(Path(out)) as tmp:
        if fmt == "torchscript":
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(wrapper, samples[:1]), str(tmp))
            with torch.no_grad():
                got = [t.numpy() for t in torch.jit.load(str(tmp))(samples)]
        else:
            _onnx(wrapper, samples[:1], tmp)
            if int8:
                _quantise(tmp, samples)
            got = _run_onnx(tmp, samples)
        report = _compare(tasks, kinds or {}, reference, got, int8)
        if not int8:
            worst = max(r["max_abs_diff"] for r in report.values())
            if worst > PARITY:
                raise TaskcutError(f"exported {fmt} differs from eager PyTorch by {worst:.2e} (> {PARITY}); "
                                   "nothing written")
    return report


def _onnx(wrapper: TupleOutputs, example: torch.Tensor, path: Path) -> None:
    need("onnx")
    axes = {"image": {0: "batch"}, **{t: {0: "batch"} for t in wrapper.tasks}}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is one fused op ONNX has no equivalent of;
    # the plain path is the same computation in exportable ops
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), str(path), input_names=["image"], output_names=wrapper.tasks,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    wrapper.eval()  # the exporter restores the mode it found; keep eval whatever that was


def need(module: str, extra: str = "deploy") -> Any:
    """An optional runtime, or one line saying which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TaskcutError(f"{module} is not installed: pip install 'taskcut[{extra}]' (or pip install {module})") from None


def ort_session(path: Path, threads: int | None = None):
    ort = need("onnxruntime")

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # do not slow torch runs after it
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_onnx(path: Path, samples: torch.Tensor) -> list[np.ndarray]:
    return ort_session(path).run(None, {"image": samples.numpy()})


def _quantise(path: Path, samples: torch.Tensor) -> None:
    need("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": samples[i:i + 1].numpy()} for i in range(len(samples))])

        def get_next(self):
            return next(self.items, None)

    fp32 = path.with_name(path.name + ".fp32")
    path.rename(fp32)
    try:
        quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        fp32.unlink(missing_ok=True)


def _compare(tasks: list[str], kinds: dict[str, str], reference: tuple[torch.Tensor, ...], got: list[np.ndarray],
             int8: bool) -> dict[str, dict[str, float]]:
    report = {}
    for task, ref, out in zip(tasks, reference, got):
        ref_np = ref.numpy()
        diff = np.abs(out - ref_np)
        row = {"max_abs_diff": float(diff.max())}
        if int8:
            if kinds.get(task) in ("segmentation", "classification"):
                row["argmax_agreement"] = float((out.argmax(1) == ref_np.argmax(1)).mean())
            else:
                row["relative_error"] = float(diff.mean() / (np.abs(ref_np).mean() + 1e-12))
        report[task] = row
    return report
