"""`taskcut info`, `prune` and `score`: a model file, the CUT stages on it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import app, out, _clean_errors, _DEVICE, _FORCE, _QUIET, _TRUST_CODE, _task_list, _distributed, _check_device
from .render import _print_layers


@app.command()
@_clean_errors
def info(model_file: Path = typer.Argument(..., help="A taskcut model file."),
         as_json: bool = typer.Option(False, "--json", help="Print the spec as JSON."),
         trust_code: bool = _TRUST_CODE) -> None:
    """Tasks, parameters and provenance of a model file."""
    from ..models import count_parameters, load, read_spec

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
        from ..compact.masking import sparsity_report

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
                                                    "transport=1MB, memory=64MB (the last two with --runtime), "
                                                    "macs=500M or latency=20ms (the last two --structured)."),
    runtime: Optional[str] = typer.Option(None, help="The device's runtime: size, transport, memory and latency "
                                                     "budgets are measured on the file it loads (onnxruntime, "
                                                     "executorch, litert, openvino; latency also torch). Without "
                                                     "it, size is taskcut's own file and latency is onnxruntime's."),
    int8: bool = typer.Option(False, "--int8", help="With --runtime: the device runs the int8 file; the budget is "
                                                    "measured on it (calibrated on the train split)."),
    threads: Optional[int] = typer.Option(None, help="Threads the runtime runs with (default 2)."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Image height and width a latency, MACs or memory "
                                                              "budget is measured at (default: the data's)."),
    data: Optional[str] = typer.Option(None, help="KIND:PATH of the data whose train split is scored, e.g. "
                                                  "synth:DIR (an own model's --config names its data)."),
    config: Optional[Path] = typer.Option(None, help="YAML naming your own model's factory, weights, tasks and "
                                                     "data (see the README's 'Your own model')."),
    out_file: Path = typer.Option(..., "--out", help="Compact model file to write."),
    fusion: str = typer.Option("vote", help="vote, vote:K, majority, union, intersection or score-sum."),
    structured: bool = typer.Option(False, help="Remove whole channels (a smaller, faster dense model); "
                                    "--sparsity is then the fraction of parameters removed."),
    round_to: Optional[int] = typer.Option(None, help="With --structured: wide layers keep a multiple of this many "
                                                      "channels (default: with a budget measured in a runtime, the step "
                                                      "measured for it; else 8)."),
    batches: Optional[int] = typer.Option(None, help="Batches to score (default 50; with --scores, the file's)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per scoring batch (default 8 for a data set; an own "
                                                        "model's batches are re-batched to it; with --scores, the "
                                                        "file's)."),
    scores: Optional[Path] = typer.Option(None, help="Scores written by `taskcut score` for this model: no forward "
                                                     "or backward pass is run; its scoring settings are used."),
    device: str = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Prune a model to the chosen tasks with CUT (per-task scores fused by a vote)."""
    from ..jobs.pruning import prune
    from ..jobs.settings import PruneSettings, ScoringSettings, make
    from ..jobs.source import open_source

    _check_device(device)
    settings = make(PruneSettings, tasks=_task_list(tasks), sparsity=sparsity, budget=budget, rule=fusion,
                    structured=structured, scores=scores, runtime=runtime, int8=int8, threads=threads, size=size,
                    round_to=round_to, scoring=make(ScoringSettings, batches=batches, batch_size=batch_size))
    source = open_source(base, config, data)
    with _distributed(device) as device:
        result = prune(source, settings, out_file, force=force, device=device, show_progress=not quiet)
    if result is None:  # a torchrun rank other than 0
        return
    if result.budget is not None:
        b = result.budget
        out.print(f"budget {b['budget']}: reached {b['reached']:,.6g} ({b['ratio']:.3f} x the budget) at sparsity "
                  f"{b['sparsity']:.4f}")
        if b.get("note"):
            out.print(b["note"], highlight=False)
    if result.left_whole:
        out.print(f"left whole (their channels cannot be cut safely): {', '.join(result.left_whole)}",
                  highlight=False, soft_wrap=True)
    table = Table(title=f"{', '.join(result.tasks)} at sparsity {result.sparsity:.4f} ({result.rule})")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("parameters (non-zero)", f"{result.params_before:,}", f"{result.params_after:,}")
    table.add_row("file size", f"{result.bytes_before / 1e6:.2f} MB", f"{result.bytes_after / 1e6:.2f} MB")
    table.add_row("file size, same tasks dense", f"{result.bytes_selected_dense / 1e6:.2f} MB",
                  f"{result.bytes_after / result.bytes_selected_dense:.2f} x")
    table.add_row("parameters removed" if structured else "sparsity of prunable weights", "0",
                  f"{result.achieved:.4f}")
    out.print(table)
    _print_layers(result.per_layer)
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
    batches: Optional[int] = typer.Option(None, help="Batches to score (default 50)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per scoring batch (default 8 for a data set; an own "
                                                        "model's batches are re-batched to it)."),
    device: str = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Score every task of a model once (one forward per batch, one backward per task), for `prune --scores`."""
    from ..jobs.scoring import score
    from ..jobs.settings import ScoringSettings, make
    from ..jobs.source import open_source

    _check_device(device)
    settings = make(ScoringSettings, batches=batches, batch_size=batch_size)
    source = open_source(base, config, data)
    with _distributed(device) as device:
        result = score(source, settings, out_file, force=force, device=device, show_progress=not quiet)
    if result is None:
        return
    each = f" of {result.scoring.batch_size}" if result.scoring.batch_size is not None else ""
    out.print(f"scored {', '.join(result.tasks)} on {result.scoring.batches} batches{each}; wrote {out_file}")
