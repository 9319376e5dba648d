"""`taskcut train`, `finetune` and `evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import TaskcutError
from .common import (app, out, _clean_errors, _DEVICE, _FORCE, _QUIET, _TRUST_CODE, _distributed, _check_device,
                     _distill_settings)
from .render import _print_base_report


@app.command()
@_clean_errors
def train(
    out_file: Path = typer.Option(..., "--out", help="Model file to write (.safetensors); metrics go beside it."),
    preset: Optional[str] = typer.Option(None, help="A shipped preset, e.g. synth-tiny."),
    config: Optional[Path] = typer.Option(None, help="A YAML config (may name a preset to start from)."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH, e.g. synth:DIR. Synth presets generate and cache their data when omitted."),
    steps: Optional[int] = typer.Option(None, help="Override the number of training steps."),
    checkpoint_every: int = typer.Option(0, min=0, help="Write a resumable checkpoint (OUT.ckpt) every N steps."),
    resume: bool = typer.Option(False, help="Continue the run from OUT.ckpt."),
    device: str = _DEVICE,
    force: bool = typer.Option(False, help="Replace existing output files."),
    quiet: bool = _QUIET,
) -> None:
    """Train a base multi-task model; the best checkpoint is chosen on the validation split (torchrun-ready)."""
    from ..config import load_config
    from ..train.runs import metrics_path, train_base

    overrides = {"train": {"steps": steps}} if steps is not None else None
    cfg = load_config(preset, config, overrides)
    _check_device(device)
    with _distributed(device) as device:
        report = train_base(cfg, out_file, data=data, force=force, device=device, show_progress=not quiet,
                            resume=resume, checkpoint_every=checkpoint_every)
    if report is None:  # a torchrun rank other than 0
        return
    _print_base_report(report)
    out.print(f"wrote {out_file} and {metrics_path(out_file)}")


@app.command("finetune")
@_clean_errors
def finetune_cmd(
    model_file: Path = typer.Argument(..., help="A (compact) model file."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH, e.g. synth:DIR (an own model's --config names its data)."),
    out_file: Path = typer.Option(..., "--out", help="Fine-tuned model file to write."),
    steps: Optional[int] = typer.Option(None, help="Training steps (default 300)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Images per step (default 32; an own model's "
                                                               "data factory's batches unless given)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 5e-4)."),
    val_every: Optional[int] = typer.Option(None, help="Validate (and keep the best) every N steps (default 50)."),
    preset: Optional[str] = typer.Option(None, help="Take the schedule (steps, batch, lr, decay) and crop from a "
                                                    "preset's finetune section, e.g. nyuv2; replaces the four above."),
    config: Optional[Path] = typer.Option(None, help="A YAML config whose finetune section gives the schedule, or "
                                                     "an own model's YAML (factory, tasks, data)."),
    distill: bool = typer.Option(False, help="Learn from the dense model too: per task, label loss + "
                                             "--distill-weight x distillation loss (see taskcut.train.distill)."),
    distill_weight: float = typer.Option(1.0, help="Weight of each task's distillation term."),
    distill_temperature: float = typer.Option(1.0, help="Softening of class outputs."),
    distill_features: float = typer.Option(0.0, min=0.0, help="Weight of matching the trunk's features (unstructured "
                                                              "zoo models; 0: outputs only)."),
    teacher: Optional[Path] = typer.Option(None, help="The dense teacher (default: the model this one was pruned "
                                                      "from, as its provenance records; an own model's: its YAML's "
                                                      "base)."),
    checkpoint_every: int = typer.Option(0, min=0, help="Write a resumable checkpoint (OUT.ckpt) every N steps."),
    resume: bool = typer.Option(False, help="Continue the run from OUT.ckpt."),
    device: str = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Fine-tune a compact model on its tasks; pruned weights stay zero; best checkpoint on validation."""
    from ..config import load_config
    from ..models.own_config import is_own_config
    from ..jobs.tuning import finetune
    from ..jobs.settings import FinetuneSettings, make
    from ..jobs.source import source_of_file

    _check_device(device)
    if not distill and (teacher is not None or distill_features or distill_weight != 1.0 or distill_temperature != 1.0):
        raise TaskcutError("--teacher and --distill-* settings need --distill")
    taught = _distill_settings(distill_weight, distill_temperature, distill_features) if distill else None
    own = config is not None and is_own_config(config)
    source = source_of_file(model_file, config if own else None, data)
    source.refuse({"--preset": preset})
    schedule, crop = None, None
    if preset is not None or (config is not None and not own):
        given = {"--steps": steps, "--batch-size": batch_size, "--lr": lr, "--val-every": val_every}
        for option, value in given.items():
            if value is not None:
                raise TaskcutError(f"{option} does not apply with a config's finetune section, which sets the "
                                   "schedule; leave it out")
        cfg = load_config(preset, config)
        if cfg.finetune is None:
            raise TaskcutError(f"config {cfg.name!r} has no finetune section")
        schedule = cfg.finetune
        crop = cfg.data.size if cfg.data.dataset != "synth" else None
    given_schedule = {"steps": steps, "batch_size": batch_size, "lr": lr, "val_every": val_every}
    settings = make(FinetuneSettings, **{k: v for k, v in given_schedule.items() if v is not None}, distill=taught,
                    teacher=teacher, checkpoint_every=checkpoint_every, resume=resume, schedule=schedule, crop=crop)
    with _distributed(device) as device:
        result = finetune(source, model_file, settings, out_file, force=force, device=device, show_progress=not quiet)
    if result is None:  # a torchrun rank other than 0
        return
    out.print(f"best validation loss {result.best_val_loss:.4f} at step {result.best_step}; wrote {out_file}")


@app.command("evaluate")
@_clean_errors
def evaluate_cmd(
    model_file: Path = typer.Argument(..., help="A model file."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH, e.g. synth:DIR (an own model's --config names its data)."),
    split: str = typer.Option("test", help="train, val or test."),
    baseline: Optional[Path] = typer.Option(None, help="Dense model for delta_T (restricted to the same tasks); "
                                                       "with an own model's --config, 'base' is its base model."),
    config: Optional[Path] = typer.Option(None, help="An own model's YAML (factory, tasks, data)."),
    control: Optional[bool] = typer.Option(None, help="With --baseline and a fine-tuned model, also fine-tune the "
                                                      "dense model on the same tasks with the same schedule (cached) "
                                                      "and report delta_T against it: the control for the extra "
                                                      "training (default on; for an own model's --config, with "
                                                      "--baseline base)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="JSON file to write."),
    metrics: str = typer.Option("standard", help="standard (pixel-level over the split) or adashare (the "
                                                 "papers' conventions, to compare with their tables)."),
    device: str = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = typer.Option(False, help="No progress bar (for the control's fine-tuning)."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Per-task metrics on a split, and delta_T against a baseline and against the fine-tuned dense control."""
    from ..jobs.evaluation import evaluate
    from ..jobs.settings import EvaluateSettings, make
    from ..jobs.source import source_of_file

    _check_device(device)
    settings = make(EvaluateSettings, split=split, baseline=baseline, control=control, metrics=metrics)
    source = source_of_file(model_file, config, data)
    report = evaluate(source, model_file, settings, out_file, force=force, device=device, show_progress=not quiet)
    references = [(key, title) for key, title in (("baseline", "dense"), ("control", "dense + same fine-tuning"))
                  if key in report]
    table = Table(title=f"{model_file} on {split}")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("model", justify="right")
    for _, title in references:
        table.add_column(title, justify="right")
    for task, values in report["metrics"].items():
        for name, value in values.items():
            table.add_row(task, name, f"{value:.4f}",
                          *(f"{report[key]['metrics'][task][name]:.4f}" for key, _ in references))
    out.print(table)
    for key, title in references:
        if report[key]["delta_T"] is None:
            out.print(f"delta_T vs {title} undefined: {report[key]['delta_T_undefined']}")
        else:
            out.print(f"delta_T vs {title}: {report[key]['delta_T']:+.2f}%")
    if out_file is not None:
        out.print(f"wrote {out_file}")
