"""Export a taskcut model to an edge runtime's file, and prove the file computes what eager PyTorch does.

Formats (`taskcut.deploy.formats`): ONNX (ONNX Runtime), ExecuTorch, LiteRT, OpenVINO and
TorchScript. Outputs are named by task where the format allows it. After every export the file
is run in its own runtime on sample inputs and compared with the eager model: fp32 must agree to
1e-4 (max absolute difference) or the export fails and nothing is left behind. `int8` quantises
statically, calibrated on training images, and reports per-task agreement instead (argmax
agreement for segmentation and classification, relative error for dense outputs). Given
evaluation data, the exported file's own metrics on it are computed in its runtime, with
delta_T against the fp32 model in PyTorch. A `FILE.taskcut.json` beside the file records the
tasks, the format and these figures.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..compact.masking import unmask
from ..cut.decompose import task_outputs
from ..errors import TaskcutError
from ..fileio import clean_stale, temp_prefix
from ..tasks.dense import TaskSpec
from ..tasks.kinds import KINDS
from .formats import FORMATS, Format, get_format, need

PARITY = 1e-4
CALIBRATION_IMAGES = 32
Runner = Callable[[np.ndarray], list[np.ndarray]]


class TupleOutputs(nn.Module):
    """The model with outputs as a tuple in task order: what exporters need."""

    def __init__(self, model: nn.Module, tasks: list[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(tasks) if tasks is not None else list(model.tasks)  # type: ignore[arg-type]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = task_outputs(self.model(image))
        return tuple(out[t] for t in self.tasks)


def baked(model: nn.Module) -> nn.Module:
    """A copy with masks multiplied into plain weights (exporters see ordinary parameters)."""
    model = copy.deepcopy(model).eval()
    unmask(model)
    return model


def sample_inputs(size: tuple[int, int], n: int = 4, seed: int = 0) -> torch.Tensor:
    """Synth scenes as sample images when no data is given."""
    from ..data.synth import render

    return torch.from_numpy(np.stack([render(seed, "test", i, *size)["image"] for i in range(n)]))


def check_options(fmt: str, int8: bool, out: Path) -> Format:
    """Every refusal that needs no work: unknown format, int8 where it is not offered, the file name,
    a runtime not installed."""
    form = get_format(fmt)
    if int8 and not form.int8:
        offered = ", ".join(f.name for f in FORMATS.values() if f.int8)
        raise TaskcutError(f"--int8 is not available for --format {fmt}; it is for: {offered}")
    if not Path(out).name.endswith(form.suffix):
        raise TaskcutError(f"--out for --format {fmt} must end in {form.suffix}, got {Path(out).name}")
    form.module()  # a missing extra is one line, before any work
    return form


def file_set(out: Path, form: Format) -> list[Path]:
    """Every file an export writes: the model, its companions (OpenVINO's weights), the record."""
    return [out, *companions(out, form), record_path(out)]


def companions(out: Path, form: Format) -> list[Path]:
    """The files a runtime loads with the model file (OpenVINO's weights); none for single-file formats."""
    module = form.module()
    return list(module.companions(out)) if hasattr(module, "companions") else []


def record_path(out: Path) -> Path:
    return Path(f"{out}.taskcut.json")


def model_data(spec: Mapping[str, Any]) -> str | None:
    """The data a zoo model was trained or fine-tuned on, from its provenance (calibration and evaluation)."""
    node: Any = spec.get("provenance", {})
    while isinstance(node, dict):  # a pruned model's provenance nests its base's under "base"
        for source in (node.get("finetune"), node):
            if isinstance(source, dict) and isinstance(source.get("data"), str):
                return source["data"]
        node = node.get("base")
    return None


def training_images(data: str, specs: Mapping[str, TaskSpec], n: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """The first `n` images of the train split: int8 calibration, and the samples exports are checked on."""
    from ..data.dataset import open_for_tasks

    train = open_for_tasks(data, "train", specs)
    return torch.as_tensor(train.batch(list(range(min(len(train), n))))["image"]).contiguous()


def export_module(model: nn.Module, out: Path, samples: torch.Tensor, fmt: str = "onnx",
                  calibration: torch.Tensor | None = None, specs: Mapping[str, TaskSpec] | None = None,
                  evaluation: Iterable[Any] | None = None, show_progress: bool = False,
                  source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Export any model returning `{task: tensor}`, run the file in its runtime on `samples` and
    compare with eager; with `calibration` images the file is int8.

    fp32 must agree within `PARITY` or nothing is written. With `evaluation` batches (a taskcut
    data set or dict batches with "image" and targets) the metrics of the file and of the eager
    model are computed on them, and delta_T of the file against the eager model. `source` (the
    model file, the data and split) goes into the record as given.
    """
    out = Path(out)
    int8 = calibration is not None
    form = check_options(fmt, int8, out)
    kinds = {n: s.kind for n, s in (specs or {}).items()}
    model = baked(model)
    samples = samples.contiguous()  # exporters record the example's memory layout; runtimes get NCHW
    calibration = calibration.contiguous() if calibration is not None else None
    with torch.no_grad():
        tasks = list(task_outputs(model(samples[:1])))
    wrapper = TupleOutputs(model, tasks).eval()
    with torch.no_grad():
        reference = [t.numpy() for t in wrapper(samples)]
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
    try:
        tmp = staging / out.name
        form.module().write(wrapper, samples, calibration, tmp, tasks)
        runner = open_runner(tmp, form, tasks=tasks)
        got = run_batches(runner, samples.numpy(), form)
        report = compare(tasks, kinds, reference, got, int8)
        if not int8:
            worst = max(r["max_abs_diff"] for r in report.values())
            if worst > PARITY:
                raise TaskcutError(f"exported {fmt} differs from eager PyTorch by {worst:.2e} (> {PARITY}); "
                                   "nothing written")
        record: dict[str, Any] = {"format": fmt, "runtime": form.runtime, "int8": int8, "tasks": tasks,
                                  "kinds": kinds, "input": list(samples.shape[1:]),
                                  "batch": 1 if form.fixed_batch else None,
                                  "calibration_images": len(calibration) if int8 else 0,
                                  "check": report}
        if evaluation is not None and specs:
            record["evaluation"] = evaluate_file_against(runner, form, model, tasks, specs, evaluation)
        if source is not None:  # what was exported, and the data it was checked and evaluated on
            record["source"] = dict(source)
        (staging / record_path(out).name).write_text(json.dumps(record, indent=2))
        for name in sorted(os.listdir(staging), key=lambda n: n == out.name):  # the model file last
            with open(staging / name, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(staging / name, out.parent / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def open_runner(path: Path, form: Format | None = None, threads: int | None = None,
                tasks: list[str] | None = None) -> Runner:
    """A callable from an image batch to the file's outputs (in `tasks` order where the file names them)."""
    from .formats import format_of_file

    form = form or format_of_file(path)
    if form is None:
        raise TaskcutError(f"{path} is not an exported model ({', '.join(f.suffix for f in FORMATS.values())})")
    try:
        return form.module().open_runner(Path(path), threads, tasks)
    except TaskcutError:
        raise
    except Exception as exc:  # the runtime's own error on a file that is not what its name says
        raise TaskcutError(f"{path} could not be opened by {form.runtime}: {str(exc).splitlines()[0][:200]}") from None


def run_batches(runner: Runner, images: np.ndarray, form: Format) -> list[np.ndarray]:
    """Outputs for a batch of any size: image by image where the file fixes the batch."""
    if not form.fixed_batch:
        return runner(np.ascontiguousarray(images))
    parts = [runner(np.ascontiguousarray(images[i:i + 1])) for i in range(len(images))]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def evaluate_file_against(runner: Runner, form: Format, model: nn.Module, tasks: list[str],
                          specs: Mapping[str, TaskSpec], evaluation: Iterable[Any]) -> dict[str, Any]:
    """Metrics of the exported file (run in its runtime) and of the eager model, and delta_T of the file
    against the eager model, on every batch of `evaluation`."""
    from ..tasks.dense import delta_fields
    from ..train.evaluate import evaluate_predictor

    chosen = {t: specs[t] for t in tasks if t in specs}

    def exported(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outs = run_batches(runner, batch["image"].cpu().numpy(), form)
        return {t: torch.from_numpy(o) for t, o in zip(tasks, outs)}

    def eager(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return task_outputs(model(batch["image"]))

    with torch.no_grad():
        file_metrics = evaluate_predictor(exported, evaluation, chosen)
        eager_metrics = evaluate_predictor(eager, evaluation, chosen)
    result: dict[str, Any] = {"metrics": file_metrics, "eager_fp32": eager_metrics}
    result.update(delta_fields(file_metrics, eager_metrics, chosen))
    return result


def ort_session(path: Path, threads: int | None = None):
    from .formats import onnx as onnx_format

    need("onnxruntime")
    return onnx_format.session(path, threads)


def compare(tasks: list[str], kinds: dict[str, str], reference: list[np.ndarray], got: list[np.ndarray],
            int8: bool) -> dict[str, dict[str, float]]:
    report = {}
    for task, ref, out in zip(tasks, reference, got):
        diff = np.abs(out - ref)
        row = {"max_abs_diff": float(diff.max())}
        if int8:
            if kinds.get(task) in KINDS and KINDS[kinds[task]].class_scores:
                row["argmax_agreement"] = float((out.argmax(1) == ref.argmax(1)).mean())
            else:
                row["relative_error"] = float(diff.mean() / (np.abs(ref).mean() + 1e-12))
        report[task] = row
    return report
