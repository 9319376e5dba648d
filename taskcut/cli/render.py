"""Tables the commands print: rendering apart from dispatch."""

from __future__ import annotations

from rich.table import Table

from .common import out


def _print_layers(per_layer: dict) -> None:
    table = Table(title="per layer")
    table.add_column("weight")
    table.add_column("size", justify="right")
    table.add_column("sparsity", justify="right")
    for name, (size, sparsity) in per_layer.items():
        table.add_row(name, f"{size:,}", f"{sparsity:.3f}")
    out.print(table)


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
