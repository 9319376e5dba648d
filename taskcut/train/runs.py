"""Training a base model on a data set (train -> evaluate against image-blind predictors -> files), and the
dense teacher and the dense control of a model file (used by `taskcut.jobs.source.FileSource`)."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import __version__
from ..cache import cache_dir, synth_set
from ..train.checkpoint import checkpoint_path
from ..config import DistillConfig, RunConfig, TrainConfig
from ..train.distill import Teacher
from ..train.distributed import world
from ..data.dataset import SynthDataset, open_for_tasks, validation_source
from ..errors import TaskcutError
from ..train.evaluate import collect
from ..fileio import check_writable, file_sha256, write_text
from ..tasks.floors import synth_floors
from ..models import count_parameters, load, save
from ..cut.select import select
from ..tasks.maps import SegmentationMetrics
from ..train.fit import fit, train
from ..tasks.trivial import trivial_metrics


def metrics_path(model_path: Path) -> Path:
    """`base.safetensors` -> `base.metrics.json`, beside the model."""
    return model_path.with_name(model_path.name.removesuffix(".safetensors") + ".metrics.json")


def resolve_data(config: RunConfig, data: str | None, show_progress: bool = True) -> str:
    """The `KIND:PATH` to read: the user's, or for synth presets the cached generated set."""
    if data is not None:
        return data
    if config.data.dataset != "synth":
        raise TaskcutError(f"preset {config.name!r} trains on {config.data.dataset}; give --data {config.data.dataset}:PATH")
    return f"synth:{synth_set(config.data, show_progress)}"


def check_checkpoint(out: Path, resume: bool, force: bool) -> Path:
    """The run's checkpoint path; an unfinished run's checkpoint is neither ignored nor silently replaced."""
    ckpt = checkpoint_path(out)
    if ckpt.exists() and not resume and not force:
        raise TaskcutError(f"{ckpt} holds an unfinished run; pass --resume to continue it or --force to start over")
    if resume and not ckpt.is_file():
        raise TaskcutError(f"--resume: there is no checkpoint {ckpt} to continue from")
    return ckpt


def train_base(config: RunConfig, out: Path, data: str | None = None, force: bool = False,
               device: str = "cpu", show_progress: bool = True, resume: bool = False,
               checkpoint_every: int = 0) -> dict[str, Any] | None:
    """Train a base model, evaluate it on the test split beside image-blind predictors, write both files.

    With `checkpoint_every`, the run is resumable (`resume`) from `<out>.ckpt`, which is
    removed once the model is written. Under torchrun, rank 0 evaluates and writes; the
    other ranks return None.
    """
    out = Path(out)
    report_path = metrics_path(out)
    check_writable(out, force)
    check_writable(report_path, force)
    ckpt = check_checkpoint(out, resume, force)
    dev = torch.device(device)
    spec = resolve_data(config, data, show_progress)
    tasks = config.model.task_specs()
    crop = config.data.size if config.data.dataset != "synth" else None
    train_set, val_set, test_set = (open_for_tasks(spec, s, tasks, crop) for s in ("train", "val", "test"))

    result = train(config, train_set, val_set, dev, show_progress, checkpoint=ckpt,
                   checkpoint_every=checkpoint_every, resume=resume)
    if not world().main:
        return None
    accumulators = collect(lambda b: result.model(b["image"]), test_set, tasks, device=dev)
    test_metrics = {name: acc.compute() for name, acc in accumulators.items()}
    trivial: dict[str, Any] | None = None
    floors: dict[str, Any] | None = None
    if isinstance(train_set, SynthDataset):  # the floors are bars for synth scenes; real sets have published tables
        trivial = trivial_metrics(train_set, test_set, tasks)
        seg_acc = accumulators.get("seg")
        floors = synth_floors(test_metrics, trivial, seg_acc if isinstance(seg_acc, SegmentationMetrics) else None)

    provenance = {"taskcut": __version__, "preset": config.name, "data": spec,
                  "validation": validation_source(val_set), "best_step": result.best_step,
                  "steps": config.train.steps, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "torch": torch.__version__, "python": platform.python_version()}
    save(result.model, out, provenance)
    report = {
        "model": str(out), "parameters": count_parameters(result.model), "config": config.model_dump(mode="json"),
        "best_step": result.best_step, "best_val_loss": result.best_val_loss, "train_seconds": result.seconds,
        "history": result.history, "test": test_metrics, "trivial_test": trivial, "floors": floors,
    }
    write_text(report_path, json.dumps(report, indent=2))
    ckpt.unlink(missing_ok=True)
    return report


def dense_teacher(spec: Mapping[str, Any], tasks: Sequence[str], distill: DistillConfig, teacher: Path | None,
                  device: str) -> Teacher:
    """The dense model restricted to `tasks`, frozen, as the compact model's teacher.

    Without `teacher`, the file the compact model was pruned from (its provenance's
    `source`), which must still hold the same weights (its hash is recorded).
    """
    if teacher is None:
        source, digest = spec.get("provenance", {}).get("source"), spec.get("provenance", {}).get("source_sha256")
        if not source:
            raise TaskcutError("this model's provenance names no dense model it was pruned from; give the teacher "
                               "(--teacher BASE.safetensors)")
        teacher = Path(source)
        if not teacher.is_file():
            raise TaskcutError(f"the dense model this one was pruned from, {teacher}, is gone; give --teacher")
        if digest and file_sha256(teacher) != digest:
            raise TaskcutError(f"{teacher} changed since this model was pruned from it; give --teacher")
    base = load(Path(teacher), device)
    missing = [t for t in tasks if t not in base.tasks]
    if missing:
        raise TaskcutError(f"teacher {teacher} has no task(s) {', '.join(missing)}")
    dense = select(base, list(tasks)).model
    return Teacher(dense, distill, dense.config.task_specs())


#: How `fit` trains, as cached controls must match it: 2 = fused Adam and channels-last inputs to the zoo
#: model (a control cached by the version before was trained otherwise and is trained again).
TRAINING_REVISION = 2


def dense_control(baseline: Path, tasks: Sequence[str], cfg: TrainConfig, data: str,
                  crop: Sequence[int] | None = None, device: str = "cpu", show_progress: bool = True) -> Path:
    """The dense model restricted to `tasks`, fine-tuned exactly as a compact model was: the control.

    Same schedule, seed (so the same batches in the same order), loss weights and selection
    on the validation split; only the pruning differs. A compact model's gain over the dense
    model that this control also shows is the extra task-specific training, not the pruning.
    A schedule with distillation is followed too: the dense model then learns from a frozen
    copy of itself, so the control has every ingredient of the compact model's fine-tuning.
    Cached by (base file hash, tasks, schedule, data, `TRAINING_REVISION`), like the base model.
    """
    key_data = {"base": file_sha256(baseline), "tasks": list(tasks), "train": cfg.key(), "data": data,
                "crop": list(crop) if crop else None, "training": TRAINING_REVISION}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "controls" / f"control-{key}.safetensors"
    if path.is_file():
        return path
    dense = select(load(baseline, device), list(tasks)).model
    specs = dense.config.task_specs()
    train_set, val_set = (open_for_tasks(data, s, specs, tuple(crop) if crop else None) for s in ("train", "val"))
    weights = {name: t.loss_weight for name, t in dense.config.tasks.items()}
    taught = dense_teacher({}, list(tasks), cfg.distill, baseline, device) if cfg.distill is not None else None
    result = fit(dense, specs, weights, cfg, train_set, val_set, device, show_progress, label="control",
                 teacher=taught)
    save(result.model, path, {"control": {**key_data, "best_step": result.best_step, "source": str(baseline),
                                          "validation": validation_source(val_set)}})
    return path


def _finetune_schedule(spec: Mapping[str, Any]) -> tuple[TrainConfig, str, list[int] | None] | None:
    """How a model file was fine-tuned (schedule, data, crop), from its provenance; None if it was not."""
    ft = spec.get("provenance", {}).get("finetune")
    if not isinstance(ft, dict) or "data" not in ft:
        return None
    fields = {k: ft[k] for k in TrainConfig.model_fields if k in ft}
    return TrainConfig(**fields), str(ft["data"]), ft.get("crop")


