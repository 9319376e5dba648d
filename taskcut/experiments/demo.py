"""`taskcut demo`: the whole CUT pipeline on the embedded synth scenes, with a report.

The synth set and the synth-tiny base model are cached (keyed by their configs), so a
second run starts at pruning.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..cache import cache_dir
from ..config import load_config
from ..errors import TaskcutError
from ..fileio import write_text
from .pipeline import evaluate_file, finetune_file, resolve_data, train_base
from .prune import prune

MARKER = ".taskcut-demo"
TASKS = ["seg", "depth"]
SPARSITY = 0.7
COMPARE_METHODS = ["cut", "magnitude", "random"]
FINETUNE = {"steps": 300, "batch_size": 32, "lr": 5e-4, "val_every": 50}


def base_model(show_progress: bool = True, device: str = "cpu") -> tuple[Path, str, bool]:
    """The cached synth-tiny base model (trained on first use), its data spec, and whether it was trained now."""
    config = load_config("synth-tiny")
    data = resolve_data(config, None, show_progress)
    key = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "models" / f"synth-tiny-{key}.safetensors"
    if path.is_file():
        return path, data, False
    train_base(config, path, data=data, force=True, device=device, show_progress=show_progress)
    return path, data, True


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TaskcutError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise TaskcutError(f"{out} is not empty and is not a taskcut demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by taskcut demo; its files are replaced by the next demo run\n")


def demo(out: Path, device: str = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Run data -> base -> prune {seg, depth} at 70% -> fine-tune -> evaluate; write DIR/report.md."""
    out = Path(out)
    _prepare(out)
    t0 = time.perf_counter()
    base, data, trained = base_model(show_progress, device)
    t_base = time.perf_counter() - t0
    compact = out / "compact.safetensors"
    tuned = out / "compact-finetuned.safetensors"
    summary = prune(base, TASKS, SPARSITY, compact, data, force=True, device=device, show_progress=show_progress)
    t1 = time.perf_counter()
    ft = finetune_file(compact, data, tuned, force=True, device=device, show_progress=show_progress, **FINETUNE)
    t_ft = time.perf_counter() - t1
    pruned_eval = evaluate_file(compact, data, "test", baseline=base, device=device)
    tuned_eval = evaluate_file(tuned, data, "test", baseline=base, device=device)
    result = {
        "base": str(base), "base_trained_now": trained, "base_seconds": t_base, "data": data,
        "prune": summary.to_dict(), "finetune": {k: v for k, v in ft.items() if k != "history"},
        "finetune_seconds": t_ft, "dense": tuned_eval["baseline"]["metrics"],
        "pruned": pruned_eval["metrics"], "pruned_delta_T": pruned_eval["baseline"]["delta_T"],
        "finetuned": tuned_eval["metrics"], "finetuned_delta_T": tuned_eval["baseline"]["delta_T"],
        "finetuned_per_task": tuned_eval["baseline"]["per_task"], "seconds": time.perf_counter() - t0,
        "control": tuned_eval["control"]["metrics"], "finetuned_delta_T_control": tuned_eval["control"]["delta_T"],
        "finetuned_per_task_control": tuned_eval["control"]["per_task"],
    }
    result["comparison"] = _comparison(base, data, out / "compare", device, show_progress)
    result["seconds"] = time.perf_counter() - t0
    write_text(out / "results.json", json.dumps(result, indent=2))
    write_text(out / "report.md", render_report(result))
    return result


def _comparison(base: Path, data: str, out: Path, device: str, show_progress: bool) -> dict[str, Any]:
    """cut, magnitude and random at 70% with the demo's fine-tuning budget, through `taskcut compare`."""
    import shutil

    from .compare import CompareSpec, run_compare

    if out.exists():
        shutil.rmtree(out)  # the demo folder is the demo's own; a fresh base may have been trained
    spec = CompareSpec(base=base, tasks=TASKS, sparsities=[SPARSITY], methods=COMPARE_METHODS, seeds=[0],
                       data=data, out=out, finetune_steps=FINETUNE["steps"], batches=50, batch_size=8,
                       finetune_batch_size=FINETUNE["batch_size"], lr=FINETUNE["lr"])
    rows = run_compare(spec, device, show_progress)
    return {r["method"]: {k: r[k] for k in r if k.startswith("delta_")} for r in rows}


def render_report(r: dict[str, Any]) -> str:
    p = r["prune"]
    lines = [
        "# taskcut demo: CUT on synth scenes", "",
        f"Base model: synth-tiny, five tasks ({r['base']}). Pruned to {', '.join(p['tasks'])} at "
        f"{p['sparsity']:.0%} sparsity with rule `{p['rule']}` (achieved {p['achieved']:.4f}), "
        f"fine-tuned for {FINETUNE['steps']} steps (best validation loss at step {r['finetune']['best_step']}). "
        "The control is the dense model on the same tasks fine-tuned with exactly the same budget, seed and "
        "selection rule: what the extra training alone gives. Metrics on the test split.", "",
        "| task | metric | dense (same tasks) | dense + same fine-tuning (control) | pruned | pruned + fine-tuned |",
        "|---|---|---|---|---|---|",
    ]
    for task, metrics in r["dense"].items():
        for name, value in metrics.items():
            lines.append(f"| {task} | {name} | {value:.4f} | {r['control'][task][name]:.4f} | "
                         f"{r['pruned'][task][name]:.4f} | {r['finetuned'][task][name]:.4f} |")
    lines += [
        "", f"delta_T against the dense model on the same tasks: pruned {r['pruned_delta_T']:+.2f}%, "
        f"pruned + fine-tuned **{r['finetuned_delta_T']:+.2f}%** "
        f"({', '.join(f'{t} {v:+.2f}%' for t, v in r['finetuned_per_task'].items())}).",
        f"delta_T of pruned + fine-tuned against the control: **{r['finetuned_delta_T_control']:+.2f}%** "
        f"({', '.join(f'{t} {v:+.2f}%' for t, v in r['finetuned_per_task_control'].items())}).", "",
        "| | parameters | file |", "|---|---|---|",
        f"| base, five tasks | {p['params_before']:,} | {p['bytes_before'] / 1e6:.2f} MB |",
        f"| dense, {len(p['tasks'])} tasks | {p['params_selected']:,} | {p['bytes_selected_dense'] / 1e6:.2f} MB |",
        f"| compact, {len(p['tasks'])} tasks | {p['params_after']:,} non-zero | {p['bytes_after'] / 1e6:.2f} MB "
        f"({p['bytes_after'] / p['bytes_selected_dense']:.2f} x dense) |", "",
        f"Time: base model {r['base_seconds']:.0f} s ({'trained now' if r['base_trained_now'] else 'cached'}), "
        f"scoring {p['seconds_scoring']:.1f} s, fine-tuning {r['finetune_seconds']:.0f} s, total {r['seconds']:.0f} s.",
        "", "## Against simple baselines at the same sparsity and fine-tuning budget (seed 0)", "",
        "| method | delta_T vs dense | delta_T vs control | " + " | ".join(f"delta {t}" for t in TASKS) + " |",
        "|---|---|---|" + "---|" * len(TASKS),
    ]
    for method, d in r.get("comparison", {}).items():
        lines.append(f"| {method} | {d['delta_T']:+.2f}% | {d.get('delta_T_control', float('nan')):+.2f}% | "
                     + " | ".join(f"{d[f'delta_{t}']:+.2f}%" for t in TASKS) + " |")
    lines += ["", "![delta_T against sparsity](compare/plots/delta_t.png)", "",
              "Full tables, plots and sample predictions: `compare/report.html`.", ""]
    return "\n".join(lines)
