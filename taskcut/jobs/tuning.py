"""`taskcut finetune`: a compact model trained on its tasks' losses, for any source. Pruned weights
stay zero (the masks are enforced); the weights with the lowest validation loss are kept (never the
test split's); optionally the dense model teaches it; resumable from checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import TaskcutError
from ..fileio import check_writable
from ..tasks import TaskSpec
from .settings import FinetuneSettings
from .source import Source


@dataclass
class FinetuneResult:
    """What `finetune` made: the model, its tasks and file, and how training went."""

    model: nn.Module
    specs: dict[str, TaskSpec]
    path: Path
    best_step: int
    best_val_loss: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def finetune(source: Source, model_file: Path, settings: FinetuneSettings, out: Path, *, force: bool = False,
             device: str = "cpu", show_progress: bool = True) -> FinetuneResult | None:
    """Fine-tune the compact model in `model_file` (pruned from the source's base) and write it to `out`.

    The schedule is `settings` (or a preset's, `settings.schedule`, with its weight decay and
    learning-rate steps). With `settings.distill`, the dense model teaches it: the source's base
    restricted to the same tasks, or the model file `settings.teacher`. With
    `settings.checkpoint_every` the run is resumable (`settings.resume`) from `<out>.ckpt`, removed
    once the model is written. Under torchrun, rank 0 writes; the other ranks return None.
    """
    from ..train.runs import check_checkpoint
    from ..train.distributed import world
    from ..train.fit import fit

    model_file, out = Path(model_file), Path(out)
    check_writable(out, force)
    if out.resolve() == model_file.resolve():
        raise TaskcutError(f"--out {out} would overwrite the input model")
    ckpt = check_checkpoint(out, settings.resume, force)
    if settings.teacher is not None and settings.distill is None:
        raise TaskcutError("--teacher and --distill-* settings need --distill")
    source.check_finetune(settings)
    record, spec = source.open_model(model_file, device)
    model, specs = record.model, record.tasks
    cfg = source.train_config(settings)
    train, val = source.fit_data(model, specs, settings, device)
    teacher = source.teacher(spec, specs, cfg.distill, settings.teacher, device) if cfg.distill is not None else None
    result = fit(model, specs, source.loss_weights(model, specs), cfg, train, val, device, show_progress,
                 label="finetune", checkpoint=ckpt, checkpoint_every=settings.checkpoint_every,
                 resume=settings.resume, teacher=teacher)
    if not world().main:
        return None
    made = source.finetune_record(cfg, settings, result.best_step, val)
    source.save(record.replace(model=result.model.cpu()), out, {**spec.get("provenance", {}), "finetune": made})
    ckpt.unlink(missing_ok=True)
    return FinetuneResult(result.model, specs, out, result.best_step, result.best_val_loss, result.seconds,
                          result.history)
