"""The `taskcut` command line: thin wrappers over the public functions, one subcommand each."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import math
import os
import signal
import sys
from pathlib import Path
import contextlib
from typing import TYPE_CHECKING, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import TaskcutError, Terminated, on_sigterm

if TYPE_CHECKING:  # the command imports its modules when it runs, for a quick start
    from .config import DistillConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Prune a pre-trained multi-task model into a compact model holding only the tasks a device needs.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect data sets.")


@app.callback()
def _main_options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error "
                                                                       "(same as TASKCUT_DEBUG=1).")) -> None:
    if debug:
        os.environ["TASKCUT_DEBUG"] = "1"

app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., object])


#: Commands that keep their finished work in --out and continue it when run again.
RESUMABLE = ("fleet_cmd", "compare_cmd")


def _clean_errors(fn: F) -> F:
    """Every failure is one red line on stderr and exit status 2: a TaskcutError as it is, a full
    disk or another OS error with its path, anything unexpected with its type and a pointer to
    `TASKCUT_DEBUG=1`, which shows the traceback instead. Ctrl-C and SIGTERM end with exit 130/143."""

    options = inspect.signature(fn).parameters
    resume = ("A run with --checkpoint-every continues with --resume." if "resume" in options else
              "Run the same command again: finished devices and cells are kept." if fn.__name__ in RESUMABLE
              else "Run the same command again.")

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with _trust(kwargs.get("trust_code") is True, kwargs.get("config")):
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except TaskcutError as exc:
            _fail(str(exc))
        except (KeyboardInterrupt, Terminated) as exc:
            how, code = ("stopped by SIGTERM", 143) if isinstance(exc, Terminated) else ("stopped", 130)
            err.print(f"{how}; nothing half-written was left. {resume}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        except OSError as exc:
            if os.environ.get("TASKCUT_DEBUG"):
                raise
            what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or type(exc).__name__)
            _fail(f"{what}{f' writing {exc.filename}' if exc.filename else ''}; nothing half-written was left")
        except Exception as exc:
            if os.environ.get("TASKCUT_DEBUG"):
                raise
            from pydantic import ValidationError

            from .fileio import is_disk_full

            if isinstance(exc, ValidationError):  # a setting out of its bounds, wherever it was built
                first_error = exc.errors()[0]
                _fail(f"{'.'.join(map(str, first_error['loc']))}: {first_error['msg']}")
            if is_disk_full(exc):  # a library that reports ENOSPC in its own error type
                _fail(f"the disk is full ({str(exc).splitlines()[0][:200]}); nothing half-written was left")
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            _fail(f"unexpected {type(exc).__name__}: {first} (taskcut --debug ... shows the traceback)")

    return wrapper  # type: ignore[return-value]


#: Options many commands share, declared once.
_DEVICE = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0.")
_FORCE = typer.Option(False, help="Replace an existing output file.")
_QUIET = typer.Option(False, help="No progress bars or progress lines.")

#: On every command that opens a model file: a file is data unless the user says otherwise.
_TRUST_CODE = typer.Option(False, "--trust-code", help="Import and run the factory and task functions the model "
                           "file names (off: a model file is data, and opening one runs no code it names; an own "
                           "model's --config trusts what that YAML names).")


@contextlib.contextmanager
def _trust(trust_code: bool, config: object) -> Iterator[None]:
    """What this command may import from files it opens: everything with --trust-code, and the code an
    own model's --config names (the user wrote that YAML)."""
    from .trust import trusting

    references: list[str] = []
    if isinstance(config, Path) and _own(config):
        from .experiments.own import load_own_config

        references = load_own_config(config).references()
    with trusting(True if trust_code else references):
        yield


def _fail(message: str) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)  # "[deploy]" is no markup
    raise typer.Exit(2)


def _check_size(size: tuple[int, int]) -> None:
    from .settings import MAX_IMAGE_SIDE

    if size[0] <= 0 or size[1] <= 0:
        raise TaskcutError(f"--size must be two positive integers, got {size[0]} {size[1]}")
    if max(size) > MAX_IMAGE_SIDE:
        raise TaskcutError(f"--size {size[0]} {size[1]} is over the maximum side of {MAX_IMAGE_SIDE}")


@data_app.command("synth")
@_clean_errors
def data_synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write (shards + manifest.json)."),
    train: int = typer.Option(1000, help="Training images."),
    val: int = typer.Option(100, help="Validation images."),
    test: int = typer.Option(200, help="Test images."),
    size: tuple[int, int] = typer.Option((64, 64), help="Image height and width."),
    seed: int = typer.Option(0, help="Base seed; a scene is a function of (seed, split, index)."),
    force: bool = typer.Option(False, help="Replace a non-empty output folder."),
    quiet: bool = _QUIET,
) -> None:
    """Render the embedded synthetic multi-task scenes to DIR."""
    from .data.store import write_synth
    from .progress import progress_bar

    _check_size(size)
    if seed < 0:
        raise TaskcutError(f"--seed must be non-negative, got {seed}")
    counts = {"train": train, "val": val, "test": test}
    with progress_bar(not quiet) as bar:
        job = bar.add_task("render synth", total=max(sum(counts.values()), 0), info=f"{size[0]}x{size[1]}")
        manifest = write_synth(out_dir, counts, size, seed=seed, force=force,
                               progress=lambda n: bar.update(job, advance=n))
    out.print(f"wrote {sum(counts.values())} images to {out_dir} ({manifest.name})")


@data_app.command("show")
@_clean_errors
def data_show(
    data_dir: Path = typer.Argument(..., help="A synth set folder."),
    index: int = typer.Option(0, help="Item index within the split."),
    split: str = typer.Option("train", help="train, val or test."),
    out_file: Path = typer.Option(..., "--out", help="PNG file to write."),
    force: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Draw one item: its image and its five targets in one picture."""
    from .data.dataset import SynthDataset
    from .data.show import save_grid
    from .fileio import check_writable

    check_writable(out_file, force)
    dataset = SynthDataset(data_dir, split)
    if not 0 <= index < len(dataset):
        raise TaskcutError(f"--index {index} is outside the {split} split, which has {len(dataset)} items")
    save_grid(dataset[index], dataset.classes, out_file, title=f"{data_dir.name} {split} #{index}")
    out.print(f"wrote {out_file}")


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
    from .config import load_config
    from .experiments.pipeline import metrics_path, train_base

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


@app.command()
@_clean_errors
def info(model_file: Path = typer.Argument(..., help="A taskcut model file."),
         as_json: bool = typer.Option(False, "--json", help="Print the spec as JSON."),
         trust_code: bool = _TRUST_CODE) -> None:
    """Tasks, parameters and provenance of a model file."""
    from .models import count_parameters, load, read_spec

    spec = read_spec(model_file)
    if as_json:
        out.print_json(json.dumps(spec))
        return
    model = load(model_file)
    table = Table(title=str(model_file), show_header=False)
    if "factory" in spec["model"]:
        table.add_row("architecture", f"own model from {spec['model']['factory']} {spec['model'].get('kwargs') or ''}")
        table.add_row("tasks", ", ".join(f"{n} ({t['kind']})" for n, t in (spec.get("tasks") or {}).items()))
        dead = (spec.get("selection") or {}).get("dead") or []
        if dead:  # submodules no kept task reads, replaced at selection (taskcut.cut.dead)
            table.add_row("removed as unused", ", ".join(str(d.get("name")) for d in dead if isinstance(d, dict)))
    else:
        table.add_row("architecture", f"{spec['model']['arch']} (ResNet-{spec['model']['depth']}, width "
                                      f"{spec['model']['width']})")
        table.add_row("tasks", ", ".join(f"{n} ({t['kind']}, {t['channels']})" for n, t in spec["model"]["tasks"].items()))
    table.add_row("parameters", f"{count_parameters(model):,}")
    table.add_row("file size", f"{model_file.stat().st_size / 1e6:.2f} MB")
    for key, value in spec.get("provenance", {}).items():
        table.add_row(key, str(value))
    out.print(table)
    if spec.get("masked"):
        from .compact.masking import sparsity_report

        overall, per_layer = sparsity_report(model)
        out.print(f"sparsity of masked weights: {overall:.4f}")
        _print_layers({n: (math.prod(spec['masked'][n]), s) for n, s in per_layer.items()})


@app.command("prune")
@_clean_errors
def prune_cmd(
    base: Optional[Path] = typer.Argument(None, help="The pre-trained multi-task model file (not with an own "
                                                     "model's --config, which names it)."),
    tasks: str = typer.Option(..., help="Comma-separated tasks to keep, e.g. seg,depth."),
    sparsity: Optional[float] = typer.Option(None, help="Fraction of prunable weights to zero, in [0, 1)."),
    budget: Optional[str] = typer.Option(None, help="Instead of --sparsity, the least pruning that fits KIND=VALUE: "
                                                    "params=1.5M, params=0.3 (of the dense model), size=2MB, "
                                                    "macs=500M or latency=20ms (the last two --structured)."),
    runtime: str = typer.Option("onnxruntime", help="Where a latency budget is measured: onnxruntime or torch."),
    threads: int = typer.Option(2, help="Threads for a latency budget."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Image height and width a latency or MACs budget is "
                                                              "measured at (default: the data's)."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH of the data whose train split is scored, e.g. "
                                                  "synth:DIR (an own model's --config names its data)."),
    config: Optional[Path] = typer.Option(None, help="YAML naming your own model's factory, weights, tasks and "
                                                     "data (see the README's 'Your own model')."),
    out_file: Path = typer.Option(..., "--out", help="Compact model file to write."),
    fusion: str = typer.Option("vote", help="vote, vote:K, majority, union, intersection or score-sum."),
    structured: bool = typer.Option(False, help="Remove whole channels (a smaller, faster dense model); "
                                    "--sparsity is then the fraction of parameters removed."),
    batches: Optional[int] = typer.Option(None, help="Batches to score (default 50; with --scores, the file's)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per scoring batch (default 8; with --scores, the "
                                                        "file's)."),
    scores: Optional[Path] = typer.Option(None, help="Scores written by `taskcut score` for this model: no forward "
                                                     "or backward pass is run; its scoring settings are used."),
    device: str = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Prune a model to the chosen tasks with CUT (per-task scores fused by a vote)."""
    from .experiments.prune import prune

    _check_device(device)
    if size is not None:
        _check_size(size)
    if _own(config):
        from .experiments.own import load_own_config, prune_own

        if (sparsity is None) == (budget is None):
            raise TaskcutError("give either --sparsity or --budget")
        _refuse_for_own({"--batch-size": batch_size, "--size": size, "--data": data, "the model file": base})
        own = prune_own(load_own_config(config), _task_list(tasks), sparsity, out_file, fusion, structured,
                        batches if batches is not None or scores is not None else 50, force, device, budget,
                        runtime=runtime, threads=threads, scores_file=scores)
        if own["budget"]:
            b = own["budget"]
            out.print(f"budget {b['budget']}: reached {b['reached']:,.6g} ({b['ratio']:.3f} x the budget) at "
                      f"sparsity {b['sparsity']:.4f}")
        out.print(f"{', '.join(own['tasks'])}: {own['parameters_before']:,} -> {own['parameters_after']:,} "
                  f"non-zero parameters; wrote {out_file}")
        return
    base, data = _zoo_inputs(base, data)
    with _distributed(device) as device:
        summary = prune(base, _task_list(tasks), sparsity, out_file, data, fusion, batches, batch_size, force, device,
                        not quiet, structured, scores, budget, runtime, threads, size)
    if summary is None:  # a torchrun rank other than 0
        return
    if summary.budget is not None:
        b = summary.budget
        out.print(f"budget {b['budget']}: reached {b['reached']:,.6g} ({b['ratio']:.3f} x the budget) at sparsity "
                  f"{b['sparsity']:.4f}")
    table = Table(title=f"{', '.join(summary.tasks)} at sparsity {summary.sparsity:.4f} ({summary.rule})")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("parameters (non-zero)", f"{summary.params_before:,}", f"{summary.params_after:,}")
    table.add_row("file size", f"{summary.bytes_before / 1e6:.2f} MB", f"{summary.bytes_after / 1e6:.2f} MB")
    table.add_row("file size, same tasks dense", f"{summary.bytes_selected_dense / 1e6:.2f} MB",
                  f"{summary.bytes_after / summary.bytes_selected_dense:.2f} x")
    table.add_row("parameters removed" if structured else "sparsity of prunable weights", "0",
                  f"{summary.achieved:.4f}")
    out.print(table)
    _print_layers(summary.per_layer)
    out.print(f"wrote {out_file}")


@app.command("score")
@_clean_errors
def score_cmd(
    base: Optional[Path] = typer.Argument(None, help="The pre-trained multi-task model file (not with an own "
                                                     "model's --config, which names it)."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH of the data whose train split is scored (an own "
                                                  "model's --config names its data)."),
    config: Optional[Path] = typer.Option(None, help="YAML naming your own model's factory, weights, tasks and "
                                                     "data."),
    out_file: Path = typer.Option(..., "--out", help="Scores file to write (.safetensors)."),
    batches: int = typer.Option(50, help="Batches to score."),
    batch_size: Optional[int] = typer.Option(None, help="Images per scoring batch (default 8; an own model's "
                                                        "data factory makes its batches)."),
    device: str = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Score every task of a model once (one forward per batch, one backward per task), for `prune --scores`."""
    from .experiments.scores import write_scores

    _check_device(device)
    if _own(config):
        from .experiments.own import load_own_config
        from .experiments.scores import write_own_scores

        _refuse_for_own({"--data": data, "--batch-size": batch_size, "the model file": base})
        result = write_own_scores(load_own_config(config), out_file, batches, force, device, not quiet)
        out.print(f"scored {', '.join(result['tasks'])} on {batches} batches; wrote {out_file}")
        return
    base, data = _zoo_inputs(base, data)
    batch_size = 8 if batch_size is None else batch_size
    with _distributed(device) as device:
        result = write_scores(base, data, out_file, batches, batch_size, force, device, not quiet)
    if result is None:
        return
    out.print(f"scored {', '.join(result['tasks'])} on {batches} batches of {batch_size}; wrote {out_file}")


@app.command("fleet")
@_clean_errors
def fleet_cmd(
    fleet_file: Path = typer.Argument(..., help="The fleet YAML: base model, data, settings, devices."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the devices' models, fleet.csv and fleet.html."),
    device: str = _DEVICE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Score once, then prune every device to its budget, fine-tune, evaluate, export and bench; resumable."""
    from .experiments.fleet import run_fleet

    _check_device(device)
    rows = run_fleet(fleet_file, out_dir, device, not quiet)
    table = Table(title=f"fleet ({len(rows)} devices)")
    for col in ("device", "tasks", "budget", "reached", "delta_T vs dense", "vs control", "file MB", "latency ms"):
        table.add_column(col, justify="left" if col in ("device", "tasks", "budget") else "right")
    for r in rows:
        dense, control = r["delta_T_vs_dense"], r["delta_T_vs_control"]
        table.add_row(r["device"], r["tasks"], r["budget"], f"{r['reached']:,.4g} ({r['budget_ratio']:.2f}x)",
                      "undefined" if dense is None else f"{dense:+.2f}%",
                      "undefined" if control is None else f"{control:+.2f}%",
                      f"{r['file_bytes'] / 1e6:.2f}", f"{r['latency_ms']:.1f}")
    out.print(table)
    out.print(f"wrote {out_dir / 'fleet.csv'} and {out_dir / 'fleet.html'}")


@app.command("finetune")
@_clean_errors
def finetune_cmd(
    model_file: Path = typer.Argument(..., help="A (compact) model file."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH, e.g. synth:DIR (an own model's --config names its data)."),
    out_file: Path = typer.Option(..., "--out", help="Fine-tuned model file to write."),
    steps: int = typer.Option(300, min=1, help="Training steps."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Images per step (default 32; an own model's "
                                                               "data factory's batches unless given)."),
    lr: float = typer.Option(5e-4, min=0.0),
    val_every: int = typer.Option(50, min=1, help="Validate (and keep the best) every N steps."),
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
    from .config import load_config
    from .experiments.pipeline import finetune_file

    _check_device(device)
    if not distill and (teacher is not None or distill_features or distill_weight != 1.0 or distill_temperature != 1.0):
        raise TaskcutError("--teacher and --distill-* settings need --distill")
    taught = _distill_settings(distill_weight, distill_temperature, distill_features) if distill else None
    if _own(config):
        from .experiments.own import finetune_own, load_own_config

        _refuse_for_own({"--data": data, "--preset": preset})
        finetune_own(model_file, load_own_config(config), out_file, steps, lr, val_every, force, device, not quiet,
                     distill=taught, batch_size=batch_size, teacher=teacher, resume=resume,
                     checkpoint_every=checkpoint_every)
        out.print(f"fine-tuned {steps} steps; wrote {out_file}")
        return
    _, data = _zoo_inputs(model_file, data)
    schedule, crop = None, None
    if preset is not None or config is not None:
        cfg = load_config(preset, config)
        if cfg.finetune is None:
            raise TaskcutError(f"config {cfg.name!r} has no finetune section")
        schedule = cfg.finetune
        crop = cfg.data.size if cfg.data.dataset != "synth" else None
    with _distributed(device) as device:
        result = finetune_file(model_file, data, out_file, steps, 32 if batch_size is None else batch_size, lr,
                               val_every, force=force,
                                device=device, show_progress=not quiet, schedule=schedule, crop=crop,
                                resume=resume, checkpoint_every=checkpoint_every, distill=taught, teacher=teacher)
    if result is None:  # a torchrun rank other than 0
        return
    out.print(f"best validation loss {result['best_val_loss']:.4f} at step {result['best_step']}; wrote {out_file}")


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
    from .experiments.pipeline import evaluate_file

    _check_device(device)
    if _own(config):
        from .experiments.own import evaluate_own, load_own_config
        from .fileio import check_writable, write_text

        _refuse_for_own({"--data": data, "--metrics": None if metrics == "standard" else metrics})
        if control and (baseline is None or str(baseline) != "base"):
            raise TaskcutError("--control needs --baseline base: the control is the YAML's base model fine-tuned "
                               "like this one")
        if out_file is not None:
            check_writable(out_file, force)
        report = evaluate_own(model_file, load_own_config(config), split, baseline, device,
                              control=control is not False, show_progress=not quiet)
    else:
        _, data = _zoo_inputs(model_file, data)
        report = evaluate_file(model_file, data, split, baseline, out_file, force, device, convention=metrics,
                               control=control is not False, show_progress=not quiet)
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
        if _own(config):
            write_text(out_file, json.dumps(report, indent=2))
        out.print(f"wrote {out_file}")


@app.command("compare")
@_clean_errors
def compare_cmd(
    base: Optional[Path] = typer.Argument(None, help="The pre-trained multi-task model file (not with an own "
                                                     "model's --config, which names it)."),
    tasks: str = typer.Option(..., help="Comma-separated tasks to keep, e.g. seg,depth."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH, e.g. synth:DIR (not with --config)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for results.csv/md, plots and report.html."),
    sparsities: str = typer.Option("0.3,0.5,0.7,0.9", help="Comma-separated sparsities in [0, 1)."),
    methods: str = typer.Option("cut,disparse,snip,magnitude,random", help="Comma-separated methods."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    finetune_steps: int = typer.Option(100, help="Fine-tuning steps per cell (the same budget for every method)."),
    batches: int = typer.Option(20, help="Scoring batches."),
    batch_size: Optional[int] = typer.Option(None, help="Images per scoring batch (default 8; not with --config: "
                                                        "the YAML's data makes the batches)."),
    structured: bool = typer.Option(False, help="Remove whole channels instead of single weights."),
    config: Optional[Path] = typer.Option(None, "--config", help="An own model's YAML (factory, weights, tasks, "
                                                                 "data) instead of a model file and --data."),
    finetunes: str = typer.Option("plain", help="Fine-tuning recipes, comma-separated: plain (labels only), "
                                                "distill (labels + the dense model's outputs); each with its control."),
    distill_weight: float = typer.Option(1.0, help="With distill: weight of each task's distillation term."),
    distill_temperature: float = typer.Option(1.0, help="With distill: softening of class outputs."),
    distill_features: float = typer.Option(0.0, help="With distill: weight of matching the trunk's features "
                                                     "(unstructured only)."),
    device: str = _DEVICE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Compare pruning methods at equal sparsity and fine-tuning budget; resumable."""
    from .experiments.compare import CompareSpec, parse_floats, parse_ints, run_compare
    from .experiments.report import markdown, summary_table

    _check_device(device)
    if config is not None:
        _refuse_for_own({"--data": data, "--batch-size": batch_size, "the model file": base})
        if distill_features:
            raise TaskcutError("--distill-features is not available with --config: an own model names no trunk "
                               "whose features could be matched")
    else:
        base, data = _zoo_inputs(base, data)
    spec = CompareSpec(base=base, tasks=_task_list(tasks), sparsities=parse_floats(sparsities, "--sparsities"),
                       methods=_task_list(methods), seeds=parse_ints(seeds, "--seeds"), data=data or "", out=out_dir,
                       finetune_steps=finetune_steps, batches=batches,
                       batch_size=8 if batch_size is None else batch_size, structured=structured,
                       finetunes=tuple(_task_list(finetunes)),
                       distill=_distill_settings(distill_weight, distill_temperature, distill_features), config=config)
    rows = run_compare(spec, device, not quiet)
    columns, table = summary_table(rows, _specs(base, spec.tasks) if config is None else
                                   _own_specs(config, spec.tasks))
    typer.echo(markdown(columns, table))
    out.print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'results.md'} and {out_dir / 'report.html'}")


def _distill_settings(weight: float, temperature: float, features: float) -> "DistillConfig":
    """--distill-* options as settings, a bad value as one line naming its option."""
    import pydantic

    from .config import DistillConfig

    try:
        return DistillConfig(weight=weight, temperature=temperature, features=features)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise TaskcutError(f"--distill-{err['loc'][0]}: {err['msg']}") from None


def _own_specs(config: Path, tasks: list[str]) -> dict:
    from .experiments.own import load_own_config

    specs = load_own_config(config).specs
    return {t: s for t, s in specs.items() if t in tasks}


def _specs(base: Path, tasks: list[str]) -> dict:
    from .models.io import zoo_spec
    from .tasks.dense import TaskSpec

    model_tasks = zoo_spec(base)["model"]["tasks"]
    return {t: TaskSpec(t, model_tasks[t]["kind"], model_tasks[t]["channels"]) for t in model_tasks if t in tasks}


@app.command("import")
@_clean_errors
def import_cmd(
    checkpoint: Path = typer.Argument(..., help="A SceneNet checkpoint of AdaShare, DiSparse or CUT (.pth/.pth.tar)."),
    arch: str = typer.Option("scenenet-resnet34", help="scenenet-resnet34 or scenenet-resnet18."),
    tasks: str = typer.Option(..., help="Task names in the checkpoint's order (task1, task2, ...), e.g. "
                                        "seg,normal,depth; other names as name:kind."),
    out_file: Path = typer.Option(..., "--out", help="taskcut model file to write (.safetensors)."),
    preset: Optional[str] = typer.Option(None, help="Take head dilations, dropout and loss weights from a preset, "
                                                    "e.g. nyuv2 (default: the papers' 6,12,18,24 and weights 1)."),
    config: Optional[Path] = typer.Option(None, help="The same from a YAML config."),
    force: bool = _FORCE,
) -> None:
    """Import a reference SceneNet checkpoint (read weights-only; pruned masks kept) as a taskcut model."""
    from .config import load_config
    from .models import count_parameters
    from .models.reference import import_checkpoint

    template = load_config(preset, config).model if preset is not None or config is not None else None
    model = import_checkpoint(checkpoint, arch, tasks, out_file, template, force)
    out.print(f"imported {arch} with tasks {', '.join(model.tasks)} ({count_parameters(model):,} parameters); "
              f"wrote {out_file}")


@app.command("export")
@_clean_errors
def export_cmd(
    model_file: Path = typer.Argument(..., help="A taskcut model file."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, executorch, litert, openvino or torchscript."),
    out_file: Path = typer.Option(..., "--out", help="File to write (.onnx, .pte, .tflite, .xml or .pt)."),
    int8: bool = typer.Option(False, "--int8", help="Static int8, calibrated on training images."),
    data: Optional[str] = typer.Option(None, help="Calibration (train) and evaluation data; default: the "
                                       "model's own, from its provenance."),
    split: str = typer.Option("test", help="Split the exported file is evaluated on."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Height and width of the sample inputs when there is "
                                                              "no data (default 64 64)."),
    config: Optional[Path] = typer.Option(None, help="An own model's YAML: its train batches calibrate, its "
                                          "test batches check and evaluate."),
    force: bool = _FORCE,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Export for an edge runtime with outputs named by task; run in that runtime against eager PyTorch."""
    from .deploy.export import export

    if _own(config):
        from .experiments.own import export_own, load_own_config

        _refuse_for_own({"--data": data, "--size": size})
        record = export_own(model_file, load_own_config(config), fmt, out_file, int8, split, force)
    else:
        record = export(model_file, fmt, out_file, int8, size or (64, 64), force, data, split)
    table = Table(title=f"{fmt}{' int8' if int8 else ''} in {record['runtime']} against eager PyTorch "
                        f"({len(record['check'])} tasks, sample images)")
    table.add_column("task")
    keys = list(dict.fromkeys(k for r in record["check"].values() for k in r))
    for key in keys:
        table.add_column(key, justify="right")
    for task, row in record["check"].items():
        table.add_row(task, *(f"{row[k]:.3g}" if k in row else "" for k in keys))
    out.print(table)
    evaluation = record.get("evaluation")
    if evaluation:
        dt = evaluation.get("delta_T")
        out.print(f"{split} split, run in {record['runtime']}: delta_T against the fp32 model in PyTorch "
                  f"{'undefined' if dt is None else f'{dt:+.2f}%'}; "
                  + "; ".join(f"{t} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                              for t, m in evaluation["metrics"].items()), highlight=False)
    out.print(f"wrote {out_file} (record: {out_file}.taskcut.json)")


@app.command("bench")
@_clean_errors
def bench_cmd(
    model_file: Path = typer.Argument(..., help="A taskcut model file or an exported file."),
    vs: Optional[Path] = typer.Option(None, help="Another model or exported file to compare with."),
    runtime: Optional[str] = typer.Option(None, help="torch, onnxruntime, executorch, litert or openvino "
                                          "(default: an exported file's own; onnxruntime for a model file)."),
    vs_runtime: Optional[str] = typer.Option(None, help="Runtime for --vs (default: as --runtime)."),
    int8: bool = typer.Option(False, "--int8", help="Bench a model file exported to int8 on the fly."),
    data: Optional[str] = typer.Option(None, help="Calibration data for --int8 (default: the model's own)."),
    threads: int = typer.Option(2, help="Intra-op threads."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Input height and width (batch 1); default 224 224, "
                                                   "or an exported file's own."),
    runs: int = typer.Option(10, help="Timed warm runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Latency (median, min over warm runs), parameters, MACs and file size; ratios against --vs."""
    from .deploy.bench import check_runtime, measure, ratios

    if size is not None:
        _check_size(size)
    for name in (runtime, vs_runtime):
        if name is not None:
            check_runtime(name)
    stats = measure(model_file, runtime, threads, size, runs=runs, int8=int8, data=data)
    other = None
    if vs is not None:
        vs_rt = vs_runtime or (runtime if _is_model_file(vs) else None)
        other = measure(vs, vs_rt, threads, size, runs=runs)
    if as_json:
        typer.echo(json.dumps({"model": stats, "vs": other, "ratios": ratios(stats, other) if other else None},
                              indent=2))
        return
    shape = stats["size"]
    table = Table(title=f"{threads} threads, 1x3x{shape[0]}x{shape[1]}, median and min of {runs} warm runs")
    table.add_column("")
    table.add_column(f"{model_file} ({stats['runtime']}{' int8' if stats.get('int8') else ''})", justify="right")
    if other:
        table.add_column(f"{vs} ({other['runtime']}{' int8' if other.get('int8') else ''})", justify="right")
        table.add_column("ratio", justify="right")
    for key in ("parameters", "nonzero_parameters", "macs", "file_bytes", "export_bytes", "latency_ms_median",
                "latency_ms_min"):
        if key not in stats and (other is None or key not in other):
            continue
        fmt_value = (lambda v: "-" if v is None else (f"{v:,.2f}" if "latency" in key else f"{v:,}"))
        row = [key, fmt_value(stats.get(key))]
        if other:
            ratio = stats[key] / other[key] if key in stats and other.get(key) else None
            row += [fmt_value(other.get(key)), "-" if ratio is None else f"{ratio:.3f}"]
        table.add_row(*row)
    out.print(table)


def _is_model_file(path: Path) -> bool:
    from .deploy.formats import format_of_file

    return format_of_file(path) is None


@app.command("demo")
@_clean_errors
def demo_cmd(
    out_dir: Path = typer.Option(Path("taskcut-demo"), "--out", help="Folder for report.html, report.md and "
                                                                       "the devices' models."),
    device: str = _DEVICE,
    quiet: bool = _QUIET,
) -> None:
    """The main job on the embedded synth scenes: one five-task model pruned for three devices, exported,
    benched and compared; report.html."""
    from .experiments.demo import demo
    from .experiments.demo_report import comparison_rows, headline, terminal_rows

    _check_device(device)
    result = demo(out_dir, device, not quiet)
    for title, (columns, rows) in (("devices: delta_T on the test split, latency as x the dense five-task model",
                                    terminal_rows(result)), ("CUT against simpler pruning", comparison_rows(result))):
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        out.print(f"\n{title}", highlight=False)
        for line in [columns, *rows]:
            out.print("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))),
                      highlight=False, soft_wrap=True)
    for line in headline(result):
        out.print(f"- {line}", highlight=False)
    out.print(f"total {result['seconds']['total']:.0f} s; open {(out_dir / 'report.html').resolve()}", highlight=False)


#: Why an option does not apply with an own model's --config (said in the refusal).
_OWN_REASONS = {
    "--data": "its YAML names the data", "the model file": "its YAML names the model",
    "--batch-size": "its data factory makes the batches", "--size": "its data gives the input size",
    "--preset": "its YAML is the config",
    "--metrics": "own models report the standard metrics only",
}


def _refuse_for_own(given: dict[str, object]) -> None:
    """Options an own model's --config run cannot apply are refused in one line, never ignored."""
    for option, value in given.items():
        if value is not None:
            raise TaskcutError(f"{option} does not apply with an own model's --config: {_OWN_REASONS[option]}; "
                               "leave it out")


def _own(config: Optional[Path]) -> bool:
    """Whether --config names an own model (a YAML with model.factory) rather than a preset-style config."""
    from .experiments.own import is_own_config

    return is_own_config(config)


def _zoo_inputs(base: Optional[Path], data: Optional[str]) -> tuple[Path, str]:
    """A zoo run needs the model file and --data; an own model's --config would name both."""
    if base is None:
        raise TaskcutError("give the model file (or --config own.yaml naming your model's factory)")
    if data is None:
        raise TaskcutError("give --data KIND:PATH (or --config own.yaml naming your data's factory)")
    return base, data


def _task_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _print_layers(per_layer: dict) -> None:
    table = Table(title="per layer")
    table.add_column("weight")
    table.add_column("size", justify="right")
    table.add_column("sparsity", justify="right")
    for name, (size, sparsity) in per_layer.items():
        table.add_row(name, f"{size:,}", f"{sparsity:.3f}")
    out.print(table)


@contextlib.contextmanager
def _distributed(device: str) -> Iterator[str]:
    """Join torchrun's process group when launched by it (the device this rank uses); leave it after."""
    from .train import distributed

    try:
        yield distributed.init(device)
    finally:
        distributed.shutdown()


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise TaskcutError(f"--device {device!r} is not a torch device ({exc})") from exc
    if dev.type not in ("cpu", "cuda"):
        raise TaskcutError(f"--device {device}: taskcut runs on cpu or cuda devices")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TaskcutError(f"--device {device} asked for, but no CUDA device is available")


def _print_base_report(report: dict) -> None:
    table = Table(title="test split: model vs image-blind predictors")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("bar", justify="right")
    table.add_column("")
    for name, check in (report["floors"] or {}).items():
        mark = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
        table.add_row(name, f"{check['value']:.3f}", f"{check['bar']:.2f}", mark)
    if report["floors"]:
        out.print(table)
    metrics = Table(title="test metrics")
    metrics.add_column("task")
    metrics.add_column("metrics")
    for task, values in report["test"].items():
        metrics.add_row(task, "  ".join(f"{k}={v:.4g}" for k, v in values.items()))
    out.print(metrics)


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    app()


if __name__ == "__main__":
    sys.exit(main())
