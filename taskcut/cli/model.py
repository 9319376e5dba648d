"""`taskcut info`, `prune` and `score`: a model file, the CUT stages on it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import TaskcutError
from .common import (app, out, _clean_errors, _DEVICE, _FORCE, _QUIET, _TRUST_CODE, _check_size, _refuse_for_own, _own,
                     _zoo_inputs, _task_list, _distributed, _check_device)
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
    from ..experiments.prune import prune

    _check_device(device)
    if size is not None:
        _check_size(size)
    if _own(config):
        from ..experiments.own import load_own_config, prune_own

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
    from ..experiments.scores import write_scores

    _check_device(device)
    if _own(config):
        from ..experiments.own import load_own_config
        from ..experiments.scores import write_own_scores

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
