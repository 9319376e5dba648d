"""`taskcut fleet`, `compare` and `demo`: workflows over many models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import TaskcutError
from .common import (app, out, _clean_errors, _DEVICE, _QUIET, _TRUST_CODE, _task_list,
                     _check_device, _distill_settings)


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
    from ..workflows.fleet import run_fleet

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
    batch_size: Optional[int] = typer.Option(None, help="Images per scoring batch (default 8 for a data set; an own "
                                                        "model's batches are re-batched to it)."),
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
    from ..workflows.compare import CompareSpec, parse_floats, parse_ints, run_compare
    from ..report.compare import markdown, summary_table

    from ..workflows.sources import chosen_specs
    from ..jobs.source import YamlSource, open_source

    _check_device(device)
    if isinstance(open_source(base, config, data), YamlSource) and distill_features:
        raise TaskcutError("--distill-features is not available with an own model's --config: it names no trunk "
                           "whose features could be matched")
    spec = CompareSpec(base=base, tasks=_task_list(tasks), sparsities=parse_floats(sparsities, "--sparsities"),
                       methods=_task_list(methods), seeds=parse_ints(seeds, "--seeds"), data=data, out=out_dir,
                       finetune_steps=finetune_steps, batches=batches, batch_size=batch_size, structured=structured,
                       finetunes=tuple(_task_list(finetunes)),
                       distill=_distill_settings(distill_weight, distill_temperature, distill_features), config=config)
    rows = run_compare(spec, device, not quiet)
    columns, table = summary_table(rows, chosen_specs(spec))
    typer.echo(markdown(columns, table))
    out.print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'results.md'} and {out_dir / 'report.html'}")


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
    from ..workflows.demo import demo
    from ..report.demo import comparison_rows, headline, terminal_rows

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

