"""The demo's report: one self-contained `report.html` (images inline) and `report.md` beside it.

What a reader must be able to check from the page alone: each device's tasks, budget and
what was reached; its accuracy against the dense model *and* against the dense control
(the same fine-tuning given to the dense model), so that extra training is never shown as
a gain of pruning; its latency on this CPU as a ratio to the dense five-task model; what
its predictions look like as its runtime computes them; how CUT compares with simpler
pruning where the methods differ; and the commands that reproduce every row.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..fileio import write_text
from .compare import _plt, _show, map_style
from .compare import markdown as md_table

RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "executorch": "ExecuTorch",
                 "litert": "LiteRT", "torch": "PyTorch"}
#: The test image shown (several objects, every class present).
SAMPLE = 3


def write_reports(out: Path, result: dict[str, Any], device: str = "cpu") -> None:
    """report.html and report.md in `out`, from what `demo` measured."""
    pictures = prediction_pictures(result, device)
    write_text(out / "report.md", markdown(result))
    write_text(out / "report.html", page(result, pictures, comparison_plot(result)))


# ----------------------------------------------------------------------------- figures and words


def dense_latency_ms(devices: Sequence[Mapping[str, Any]]) -> float:
    """The dense five-task model's latency (ONNX Runtime fp32), which every ratio divides by."""
    d = devices[0]
    return float(d["latency_ms"]) / float(d["latency_vs_dense"])


def runtime_label(d: Mapping[str, Any]) -> str:
    return f"{RUNTIME_NAMES.get(d['runtime'], d['runtime'])} {'int8' if d['int8'] else 'fp32'}"


def terminal_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The devices table in 80 columns (the page has every column)."""
    columns = ["device", "tasks", "budget", "x budget", "vs dense", "vs control", "runtime", "x latency"]
    return columns, [[d["device"], ",".join(d["tasks"].split()), d["budget"], f"{d['budget_ratio']:.2f}",
                      _pct(d["delta_T_vs_dense"]), _pct(d["delta_T_vs_control"]),
                      f"{d['runtime']}{' int8' if d['int8'] else ''}", f"{d['latency_vs_dense']:.2f}"]
                     for d in result["devices"]]


def device_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = ["device", "tasks", "pruning", "budget", "reached", "sparsity", "delta_T vs dense",
               "delta_T vs control", "non-zero params", "taskcut file", "runtime", "deployed file", "download (xz)",
               "peak memory", "latency", "latency / dense"]
    rows = []
    for d in result["devices"]:
        rows.append([
            d["device"], ", ".join(d["tasks"].split()), "structured" if d["structured"] else "unstructured",
            d["budget"], f"{d['budget_ratio']:.2f} x budget", f"{d['sparsity']:.3f}",
            _pct(d["delta_T_vs_dense"]), _pct(d["delta_T_vs_control"]), f"{int(d['params_nonzero']):,}",
            f"{d['file_bytes'] / 1e6:.2f} MB", runtime_label(d), f"{d['export_bytes'] / 1e6:.2f} MB",
            f"{d['transport_bytes'] / 1e6:.2f} MB", f"{d['memory_bytes'] / 1e6:.1f} MB", f"{d['latency_ms']:.2f} ms",
            f"{d['latency_vs_dense']:.2f}x",
        ])
    return columns, rows


def comparison_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    tasks = result["compare"]["tasks"]
    columns = ["method", "sparsity", "delta_T vs dense", "delta_T vs control"] + [f"{t} vs dense" for t in tasks]
    rows = []
    for r in result["comparison"]:
        rows.append([r["method"], f"{r['achieved_sparsity']:.3f}", _pct(r["delta_T"]), _pct(r.get("delta_T_control")),
                     *[_pct(r[f"delta_{t}"]) for t in tasks]])
    return columns, rows


def headline(result: dict[str, Any]) -> list[str]:
    """What the run shows, in sentences that only claim what the figures and the control support."""
    from ..workflows.naming import CONTROL

    lines = []
    for d in result["devices"]:
        vs_dense, vs_control = d["delta_T_vs_dense"], d["delta_T_vs_control"]
        text = (f"{d['device']} ({', '.join(d['tasks'].split())}; {'structured' if d['structured'] else 'unstructured'}, "
                f"{d['budget']}): sparsity {d['sparsity']:.2f}, delta_T {_pct(vs_dense)} against the dense model and "
                f"{_pct(vs_control)} against the control; {d['latency_vs_dense']:.2f}x the dense five-task model's "
                f"latency on {runtime_label(d)}.")
        if vs_dense is not None and vs_control is not None and vs_dense > 0 > vs_control:
            text += " Its gain over the dense model is the extra fine-tuning: the control gains more."
        lines.append(text)
    rows = {r["method"]: r for r in result["comparison"]}
    c = result["compare"]
    methods = [m for m in c["methods"] if m in rows]
    if "cut" in rows and len(methods) > 1:
        others = ", ".join(f"{m} {_pct(rows[m]['delta_T'])}" for m in methods if m != "cut")
        control = rows.get(CONTROL)
        lines.append(
            f"At {c['sparsity']:.0%} sparsity on {', '.join(c['tasks'])} (one seed, {c['finetune_steps']} fine-tuning "
            f"steps each), CUT reaches delta_T {_pct(rows['cut']['delta_T'])} against the dense model ({others}); "
            + (f"the dense model given the same fine-tuning reaches {_pct(control['delta_T'])}. " if control else "")
            + "A single seed separates methods only by more than about a point (README: 3-seed figures).")
    return lines


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{float(value):+.2f}%"


# ----------------------------------------------------------------------------- commands


def commands(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Shell commands that reproduce every row, with the base model and data as variables."""
    from ..deploy.formats import format_of_runtime

    fleet, c = result["fleet"], result["compare"]
    ft = fleet["finetune"]
    distill = " --distill" if ft.get("distill") else ""
    bench = fleet["bench"]
    size = " ".join(map(str, bench["size"]))
    blocks = [("Everything below at once: the fleet (each device a row of fleet.csv)",
               ["taskcut fleet fleet.yaml --out fleet-run"]),
              ("Score every task once", [f"taskcut score $BASE --data $DATA --batches {fleet['scoring']['batches']} "
                                         f"--batch-size {fleet['scoring']['batch_size']} --out scores.safetensors"])]
    for d in fleet["devices"]:
        name = d["name"]
        form = format_of_runtime(d.get("runtime", "onnxruntime"))
        fmt, suffix = form.name, form.suffix
        int8 = " --int8" if d.get("int8") else ""
        blocks.append((f"Device {name}", [
            f"taskcut prune $BASE --tasks {','.join(d['tasks'])} --budget {d['budget']}"
            + (" --structured" if d.get("structured") else "")
            + (f" --runtime {d['runtime']} --threads {bench['threads']} --size {size}"
               if d["budget"].startswith("latency") else "")
            + f" --scores scores.safetensors --data $DATA --out {name}/compact.safetensors",
            f"taskcut finetune {name}/compact.safetensors --data $DATA --steps {ft['steps']} --batch-size "
            f"{ft['batch_size']} --lr {ft['lr']} --val-every {ft['val_every']}{distill} --out {name}/tuned.safetensors",
            f"taskcut evaluate {name}/tuned.safetensors --data $DATA --baseline $BASE --out {name}/evaluation.json",
            f"taskcut export {name}/tuned.safetensors --format {fmt}{int8} --data $DATA --out {name}/model{suffix}",
            f"taskcut bench {name}/tuned.safetensors --runtime {d.get('runtime', 'onnxruntime')}"
            f"{int8 + ' --data $DATA' if int8 else ''} --size {size} --threads {bench['threads']} --runs {bench['runs']}",
        ]))
    blocks.append(("The dense five-task model's latency (the ratios' denominator)",
                   [f"taskcut bench $BASE --runtime onnxruntime --threads {bench['threads']} --size {size} "
                    f"--runs {bench['runs']}"]))
    blocks.append(("The comparison of methods", [
        f"taskcut compare $BASE --tasks {','.join(c['tasks'])} --sparsities {c['sparsity']} --methods "
        f"{','.join(c['methods'])} --seeds {c['seed']} --finetune-steps {c['finetune_steps']} --batches "
        f"{fleet['scoring']['batches']} --data $DATA --out compare"]))
    return blocks


def _variables(result: dict[str, Any]) -> str:
    return f"BASE={result['base']}\nDATA={result['data']}"


# ----------------------------------------------------------------------------- pictures


def prediction_pictures(result: dict[str, Any], device: str = "cpu") -> dict[str, bytes]:
    """Per task: the input, the ground truth, the dense model, and each device's exported model as its
    runtime computes it (PNG bytes keyed by task)."""
    from ..data.dataset import open_for_tasks
    from ..deploy.export import open_runner, run_batches
    from ..deploy.formats import format_of_file
    from ..models import load
    from ..tasks.maps import resize_to

    base = load(Path(result["base"]), device).eval()
    specs = base.config.task_specs()
    test = open_for_tasks(result["data"], "test", specs)
    item = test.batch(torch.tensor([SAMPLE]))
    image = item["image"].contiguous()
    with torch.no_grad():
        dense = {t: v.cpu() for t, v in base(image.to(device)).items()}
    outputs: dict[str, list[tuple[str, torch.Tensor]]] = {t: [("dense, five tasks", dense[t])] for t in specs}
    for d in result["devices"]:
        tasks = d["tasks"].split()
        path = Path(d["exported"])
        form = format_of_file(path)
        assert form is not None
        got = run_batches(open_runner(path, form, 2, tasks), image.numpy(), form)
        for task, value in zip(tasks, got):
            outputs[task].append((f"{d['device']} ({runtime_label(d)})", torch.from_numpy(np.asarray(value))))
    pictures = {}
    for task, spec in specs.items():
        if len(outputs[task]) == 1:
            continue  # no device holds this task
        target = item[task]
        panels = [("input", image[0].permute(1, 2, 0).numpy().clip(0, 1)), ("ground truth", _show(target[0], spec.kind))]
        panels += [(name, _show(resize_to(pred, target.shape[-2:])[0], spec.kind)) for name, pred in outputs[task]]
        pictures[task] = _panels(task, spec.kind, panels)
    return pictures


def _panels(task: str, kind: str, panels: list[tuple[str, np.ndarray]]) -> bytes:
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.7))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, **({} if title == "input" else map_style(kind)))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{task} ({kind}), test image {SAMPLE}", fontsize=10)
    return _png(fig)


def comparison_plot(result: dict[str, Any]) -> bytes:
    """delta_T against the dense model per method (per task beside it), the control as a line."""
    from ..workflows.naming import CONTROL

    plt = _plt()
    rows = [r for r in result["comparison"] if r["method"] != CONTROL]
    control = next((r for r in result["comparison"] if r["method"] == CONTROL), None)
    tasks = result["compare"]["tasks"]
    keys = ["delta_T"] + [f"delta_{t}" for t in tasks]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(keys)
    xs = np.arange(len(rows))
    for i, key in enumerate(keys):
        values = [max(r[key], -30.0) for r in rows]  # a collapsed method is drawn at the axis floor
        ax.bar(xs + (i - (len(keys) - 1) / 2) * width, values, width, label="delta_T" if key == "delta_T" else key[6:])
    if control is not None:
        ax.axhline(control["delta_T"], color="black", linestyle=":", label="dense + same fine-tuning (control)")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xticks(xs, [f"{r['method']}\n{r['delta_T']:+.1f}%" for r in rows])
    ax.set_ylabel("against the dense model (%)")
    ax.set_ylim(bottom=max(-31.0, min(min(r[k] for r in rows for k in keys) - 1, -1)))
    ax.set_title(f"{result['compare']['sparsity']:.0%} sparsity, {', '.join(tasks)}: test split", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _png(fig) -> bytes:
    plt = _plt()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the two documents


def _intro(result: dict[str, Any]) -> str:
    ft = result["fleet"]["finetune"]
    return (f"One five-task base model (synth-tiny: seg, normal, depth, keypoint, edge) pruned with CUT for three "
            f"devices. Every task is scored once; each device is pruned to its budget, fine-tuned {ft['steps']} steps"
            f"{' learning from the dense model (distillation)' if ft.get('distill') else ''}, evaluated on the test "
            f"split against the dense model on its tasks and against the control (that dense model given exactly "
            f"the same fine-tuning), exported to its runtime and benched on this CPU. Latency ratios divide by the "
            f"dense five-task model on ONNX Runtime fp32 ({dense_latency_ms(result['devices']):.2f} ms at "
            f"{'x'.join(map(str, result['fleet']['bench']['size']))}, batch 1, {result['fleet']['bench']['threads']} threads). "
            f"Unstructured zeros shrink the model file (stored sparse) but not the time a dense runtime takes: an "
            f"unstructured device is faster than the dense five-task model only by the heads it does not run; "
            f"structured pruning removes channels and int8 speeds up what is left. The model file is taskcut's "
            f"(zeros stored sparse); the deployed file is what the device's runtime loads, the download its .tar.xz (an update's size), the peak memory what the runtime adds to load it and run one input; a budget on a runtime is measured on these.")


def markdown(result: dict[str, Any]) -> str:
    lines = ["# taskcut demo: one model, three devices", "", _intro(result), ""]
    lines += [f"- {line}" for line in headline(result)] + [""]
    lines += [md_table(*device_rows(result)), "## CUT against simpler pruning", "", md_table(*comparison_rows(result))]
    lines += ["## Reproduce", "", "```bash", _variables(result)]
    for title, cmds in commands(result):
        lines += [f"# {title}", *cmds]
    lines += ["```", "", f"Pictures of every task's predictions, the comparison plot and the same tables: "
                         f"`report.html`. Time: {_times(result)}.", ""]
    return "\n".join(lines)


def _times(result: dict[str, Any]) -> str:
    s = result["seconds"]
    return (f"data {s['base']:.0f} s (the base model is shipped pre-trained), fleet {s['fleet']:.0f} s, "
            f"comparison {s['compare']:.0f} s")


def page(result: dict[str, Any], pictures: dict[str, bytes], plot: bytes) -> str:
    def table(columns: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def img(alt: str, png: bytes) -> str:
        return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"

    figures = "".join(f"<figure>{img(f'predictions: {t}', png)}<figcaption>{html.escape(t)}: input, ground truth, "
                      f"dense model, each device's exported model in its runtime</figcaption></figure>"
                      for t, png in pictures.items())
    code = html.escape(_variables(result) + "\n" + "\n".join(
        f"# {title}\n" + "\n".join(cmds) for title, cmds in commands(result)))
    bullets = "".join(f"<li>{html.escape(line)}</li>" for line in headline(result))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>taskcut demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1250px}}table{{border-collapse:collapse;font-size:13px;
margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child{{text-align:left}}
figure{{margin:1em 0}}img{{max-width:100%}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}</style>
</head><body><h1>taskcut demo: one model, three devices</h1>
<p>{html.escape(_intro(result))}</p><ul>{bullets}</ul>
<h2>Devices</h2>{table(*device_rows(result))}
<h2>Predictions</h2>{figures}
<h2>CUT against simpler pruning</h2>
<p>The same tasks, sparsity, scoring batches and fine-tuning for every method; the control is the dense model
given that fine-tuning. delta_T on the test split.</p>
{table(*comparison_rows(result))}
<figure>{img("comparison of methods", plot)}</figure>
<h2>Reproduce</h2><pre>{code}</pre>
<p>Time: {html.escape(_times(result))}.</p>
</body></html>
"""
