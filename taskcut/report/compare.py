"""Tables, plots and a self-contained HTML page for `taskcut compare`."""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..data.dataset import DataSet
from ..fileio import atomic_path, write_text
from ..models import load
from ..tasks.dense import TaskSpec
from ..tasks.kinds import kind_of

def main_metric(spec: TaskSpec) -> str:
    """The metric a report shows for a task: its kind's first (each kind lists its headline figure first:
    mIoU, mean angle, absolute error, MAE, accuracy; a custom task or a user's kind its own)."""
    return spec.metrics[0].name


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_table(rows: list[dict[str, Any]], specs: Mapping[str, TaskSpec]) -> tuple[list[str], list[list[str]]]:
    """Mean ± std over seeds for each (sparsity, method): delta_T against the dense model and, where the
    run has one, against the fine-tuned dense control; per-task deltas, main metrics, size, times."""
    controlled = any("delta_T_control" in r for r in rows)
    columns = ["sparsity", "method", "seeds", "delta_T vs dense (%)"]
    columns += ["delta_T vs control (%)"] if controlled else []
    columns += [f"delta {t} (%)" for t in specs]
    columns += [f"{t} {main_metric(s)}" for t, s in specs.items()]
    columns += ["non-zero params", "file (MB)", "score (s)", "fine-tune (s)"]
    keys = ["delta_T"] + (["delta_T_control"] if controlled else []) + [f"delta_{t}" for t in specs]
    keys += [f"{t}.{main_metric(s)}" for t, s in specs.items()]
    table = []
    for sparsity in sorted({r["sparsity"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows):
            cell = [r for r in rows if r["method"] == method and r["sparsity"] == sparsity]
            if not cell:
                continue
            line = [f"{sparsity:g}", method, str(len(cell))]
            for key in keys:
                m, sd = _mean_std([r[key] for r in cell])
                line.append(f"{m:.3f} ± {sd:.3f}" if not key.startswith("delta") else f"{m:+.2f} ± {sd:.2f}")
            line.append(f"{statistics.fmean(r['params_nonzero'] for r in cell):,.0f}")
            line.append(f"{statistics.fmean(r['file_bytes'] for r in cell) / 1e6:.2f}")
            line.append(f"{statistics.fmean(r['score_seconds'] for r in cell):.1f}")
            line.append(f"{statistics.fmean(r['finetune_seconds'] for r in cell):.1f}")
            table.append(line)
    return columns, table


def markdown(columns: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    plt = _plt()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def _by_method(rows: list[dict[str, Any]], key: str) -> dict[str, tuple[list[float], list[float], list[float]]]:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        xs = sorted({r["sparsity"] for r in rows if r["method"] == method})
        means, stds = [], []
        for x in xs:
            m, sd = _mean_std([r[key] for r in rows if r["method"] == method and r["sparsity"] == x])
            means.append(m)
            stds.append(sd)
        out[method] = (xs, means, stds)
    return out


def plot_metric(rows: list[dict[str, Any]], key: str, ylabel: str, path: Path, baseline: float | None = None,
                controls: Mapping[str, float] | None = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, (xs, means, stds) in _by_method(rows, key).items():
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label="dense")
    for (name, value), style in zip((controls or {}).items(), (":", "-.")):
        ax.axhline(value, color="black", linestyle=style, label=f"{name} (control)")
    ax.set_xlabel("sparsity")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_layers(out: Path, rows: list[dict[str, Any]], sparsity: float, seed: int, path: Path) -> Path:
    """Per-layer sparsity of the shared trunk for each method at one sparsity."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        from ..workflows.naming import cell_name

        file = out / "layers" / f"{cell_name(method, sparsity, seed)}.json"
        if not file.is_file():
            continue
        layers = {k: v for k, v in json.loads(file.read_text()).items() if k.startswith("trunk.")}
        ax.plot(range(len(layers)), list(layers.values()), marker=".", label=method)
    ax.set_xlabel("trunk layer (input to output)")
    ax.set_ylabel("sparsity")
    ax.set_title(f"shared trunk, per layer, at sparsity {sparsity:g} (seed {seed})")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_samples(out: Path, rows: list[dict[str, Any]], dense: torch.nn.Module, test_set: DataSet,
                 sparsity: float, seed: int, task: str, kind: str, path: Path, device: str = "cpu") -> Path:
    """One test image: image, ground truth, dense, then each method at `sparsity`."""
    from ..workflows.naming import cell_name
    from ..tasks.maps import resize_to

    plt = _plt()
    item = test_set.batch(torch.tensor([0]))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    models = [("dense", dense)]
    for m in methods:
        file = out / "models" / f"{cell_name(m, sparsity, seed)}.safetensors"
        if file.is_file():
            models.append((m, load(file, device)))
    panels = [("image", item["image"][0].permute(1, 2, 0).numpy()), ("ground truth", _show(item[task][0], kind))]
    with torch.no_grad():
        for name, model in models:
            pred = resize_to(model.eval()(item["image"].to(device))[task], item[task].shape[-2:])[0].cpu()
            panels.append((name, _show(pred, kind)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, **({} if title == "image" else map_style(kind)))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{task}, sparsity {sparsity:g}")
    return _save(fig, path)


def map_style(kind: str) -> dict[str, Any]:
    """How a predicted (or true) map of `kind` is drawn (`Kind.map_style`): classes in fixed colours,
    scalar maps in viridis."""
    return kind_of(kind).map_style()


def _show(x: torch.Tensor, kind: str) -> np.ndarray:
    return kind_of(kind).show(x)


def write_report(out: Path, rows: list[dict[str, Any]], dense_metrics: Mapping[str, Mapping[str, float]],
                 specs: Mapping[str, TaskSpec], spec, dense: torch.nn.Module, test_set: DataSet | None,
                 device: str = "cpu") -> Path:
    """results.md, the plots and report.html (images inline, no network needed). Sample predictions
    are drawn from `test_set` (a data set of the zoo's kinds); without one they are left out."""
    from ..workflows.naming import CONTROLS

    columns, table = summary_table(rows, specs)
    write_text(out / "results.md", markdown(columns, table))
    controls = [r for r in rows if r["method"] in CONTROLS]
    rows = [r for r in rows if r["method"] not in CONTROLS]

    def control(key: str) -> dict[str, float]:
        """Each control's mean over seeds (plain fine-tuning, and distilled where the run has it)."""
        names = dict.fromkeys(r["method"] for r in controls)
        return {n: statistics.fmean(r[key] for r in controls if r["method"] == n) for n in names}

    plots = out / "plots"
    images: list[tuple[str, Path]] = [("delta_T against sparsity", plot_metric(
        rows, "delta_T", "delta_T vs dense (%)", plots / "delta_t.png", 0.0, control("delta_T")))]
    for task, s in specs.items():
        metric = main_metric(s)
        images.append((f"{task}: {metric} against sparsity",
                       plot_metric(rows, f"{task}.{metric}", f"{task} {metric}", plots / f"{task}_{metric}.png",
                                   dense_metrics[task][metric], control(f"{task}.{metric}"))))
    sparsities = sorted({r["sparsity"] for r in rows})
    shown = 0.7 if 0.7 in sparsities else sparsities[-1]
    seed = int(min(r["seed"] for r in rows))
    images.append(("shared trunk: per-layer sparsity", plot_layers(out, rows, shown, seed, plots / "layers.png")))
    for task, s in specs.items() if test_set is not None else ():
        images.append((f"sample predictions: {task}", plot_samples(out, rows, dense, test_set, shown, seed, task, s.kind,
                                                                   plots / f"samples_{task}.png", device)))
    page = _html(columns, table, images, spec)
    write_text(out / "report.html", page)
    return out / "report.html"


def _html(columns: list[str], table: list[list[str]], images: list[tuple[str, Path]], spec) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in table)
    figures = "".join(
        f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in images)
    recipes = ", ".join(spec.finetunes)
    settings = html.escape(f"tasks {', '.join(spec.tasks)}; methods {', '.join(spec.methods)}; "
                           f"{'structured (whole channels)' if spec.structured else 'unstructured'}; seeds "
                           f"{', '.join(map(str, spec.seeds))}; fine-tuning {spec.finetune_steps} steps ({recipes}); "
                           f"scoring {spec.batches} batches" + (f" of {spec.batch_size}; data {spec.data}" if spec.config is None
                                                                 else f" of the data of {spec.config}"))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>taskcut compare</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}figure{{display:inline-block;margin:1em}}
img{{max-width:100%}}</style></head>
<body><h1>taskcut compare</h1><p>{settings}</p>
<p>Mean ± standard deviation over seeds, test split. delta_T vs dense: against the dense model on the same
tasks. delta_T vs control: against <b>dense+ft</b> (for a distilled row <b>dense+ft+distill</b>), that dense
model fine-tuned with exactly the same budget and recipe,
seeds and selection rule, so a gain there is the pruning's and not extra training's.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{figures}
</body></html>
"""
