"""`taskcut export` and `bench`: edge runtimes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import app, out, _clean_errors, _FORCE, _TRUST_CODE, _check_size


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
    from ..jobs.exporting import export
    from ..jobs.settings import ExportSettings, make
    from ..jobs.source import source_of_file

    settings = make(ExportSettings, format=fmt, int8=int8, split=split, size=size)
    record = export(source_of_file(model_file, config, data), model_file, settings, out_file, force=force)
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
    config: Optional[Path] = typer.Option(None, help="An own model's YAML: its code is trusted, its data's input "
                                          "is timed and its train split calibrates --int8."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Latency (median, min over warm runs), parameters, MACs and file size; ratios against --vs."""
    from ..deploy.bench import check_runtime, measure, ratios
    from ..jobs.source import source_of_file

    if size is not None:
        _check_size(size)
    source = source_of_file(model_file, config, data) if config is not None else None
    for name in (runtime, vs_runtime):
        if name is not None:
            check_runtime(name)
    stats = measure(model_file, runtime, threads, size, runs=runs, int8=int8, data=data,
                    source=source if _is_model_file(model_file) else None)
    other = None
    if vs is not None:
        vs_rt = vs_runtime or (runtime if _is_model_file(vs) else None)
        other = measure(vs, vs_rt, threads, size, runs=runs, source=source if _is_model_file(vs) else None)
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
    from ..deploy.formats import format_of_file

    return format_of_file(path) is None
