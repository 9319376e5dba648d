"""`taskcut compare`: pruning methods side by side at equal sparsity and equal fine-tuning budget.

Each (method, sparsity, seed) cell selects the tasks, scores, fuses to the exact sparsity
with the shared `fuse`, masks, fine-tunes with the same budget and evaluates on the test
split against two references: the dense model restricted to the same tasks, and the
control, that dense model fine-tuned with the same budget, seed (so data order) and
selection rule (`dense_control`). A gain the control shows too is extra training, not
pruning. Finished cells are rows of `results.csv` and are not recomputed when the run is
resumed; a masked base (a compact file, an imported pruned checkpoint) keeps its zeros.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..compact.masking import apply_masks, masks_of, unmask
from ..settings import MAX_BATCH
from .naming import CONTROL, FINETUNES, cell_name, label
from ..config import DistillConfig
from ..errors import TaskcutError, check_choice
from ..fileio import folder_lock, read_csv, write_csv, write_text
from ..cut.fuse import check_sparsity, fuse
from .methods import RULES, check_methods, method_scores
from ..progress import console
from ..tasks.dense import TaskSpec, delta_t
from .sources import Comparison, check_source, open_comparison


@dataclass
class CompareSpec:
    base: Path | None
    tasks: list[str]
    sparsities: list[float]
    methods: list[str]
    seeds: list[int]
    data: str | None
    out: Path
    finetune_steps: int = 100
    batches: int = 20
    #: Images per scoring and per fine-tuning batch: defaults 8 and 32 on a data set; an own model's data
    #: factory makes its batches unless a size is given.
    batch_size: int | None = None
    finetune_batch_size: int | None = None
    lr: float = 5e-4
    #: Remove whole channels (`taskcut.compact.structured`) instead of masking single weights.
    structured: bool = False
    #: Fine-tuning recipes: `plain` (labels only) and/or `distill` (labels + the dense model's outputs);
    #: each method runs once per recipe, a distilled one labelled `METHOD+distill`.
    finetunes: tuple[str, ...] = ("plain",)
    distill: DistillConfig = field(default_factory=DistillConfig)
    #: An own model's YAML (its factory, weights, tasks and data) instead of `base` and `data`.
    config: Path | None = None


def validate(spec: CompareSpec) -> list[str]:
    """Check every input before anything is written; the tasks in the model's order."""
    check_methods(spec.methods)
    if not spec.finetunes:
        raise TaskcutError("--finetunes names no recipe; give plain, distill or both")
    check_choice(list(FINETUNES), list(spec.finetunes), "fine-tuning recipe", "recipes:")
    if "distill" in spec.finetunes and spec.finetune_steps == 0:
        raise TaskcutError("--finetunes distill needs --finetune-steps > 0")
    if not spec.sparsities:
        raise TaskcutError("give at least one sparsity")
    for s in spec.sparsities:
        check_sparsity(s)
    if not spec.seeds:
        raise TaskcutError("give at least one seed")
    for values, what in ((spec.sparsities, "--sparsities"), (spec.seeds, "--seeds")):
        if len(set(values)) != len(values):  # a repeat would be counted as another seed in mean ± std
            raise TaskcutError(f"{what} names a value twice: {', '.join(map(str, values))}")
    if any(s < 0 for s in spec.seeds):
        raise TaskcutError(f"--seeds must be non-negative, got {', '.join(map(str, spec.seeds))}")
    if spec.finetune_steps < 0:
        raise TaskcutError(f"--finetune-steps must be >= 0, got {spec.finetune_steps}")
    for value, what in ((spec.batches, "--batches"), (spec.batch_size, "--batch-size"),
                        (spec.finetune_batch_size, "fine-tuning batch size")):
        if value is not None and not 1 <= value <= MAX_BATCH:
            raise TaskcutError(f"{what} must be between 1 and {MAX_BATCH}, got {value}")
    if (spec.base is None) == (spec.config is None):
        raise TaskcutError("compare needs a base model file with --data, or an own model's --config (not both)")
    return check_source(spec)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return read_csv(path, text=("method",), missing=float("nan"))


def run_compare(spec: CompareSpec, device: str = "cpu", show_progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) every cell, then write the tables, plots and report. One run at a time writes
    a folder: a second fails at once, naming it."""
    validate(spec)
    with folder_lock(spec.out, exclusive=True, what="comparing into"):
        return _run_compare(spec, open_comparison(spec, device, show_progress), device, show_progress)


def _run_compare(spec: CompareSpec, source: Comparison, device: str, show_progress: bool) -> list[dict[str, Any]]:
    from ..report.compare import write_report

    out = spec.out
    specs = source.specs
    (out / "models").mkdir(parents=True, exist_ok=True)
    settings = source.settings()
    if spec.structured or "distill" in spec.finetunes:  # absent otherwise, so earlier runs stay resumable
        settings.update({"structured": spec.structured, "distill": spec.distill.model_dump()})
    settings_path = out / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        raise TaskcutError(f"{out} holds results made with other settings ({settings_path}); use another --out")
    write_text(settings_path, json.dumps(settings, indent=2))

    dense_path = out / "dense.json"
    if dense_path.is_file():
        dense_metrics = json.loads(dense_path.read_text())
    else:
        dense_metrics = source.evaluate(source.dense)
        try:
            delta_t(dense_metrics, dense_metrics, specs)
        except ValueError as exc:
            raise TaskcutError(f"the dense model cannot be a delta_T baseline on this data ({exc})") from None
        write_text(dense_path, json.dumps(dense_metrics, indent=2))

    rows = read_rows(out / "results.csv")
    done = {cell_name(r["method"], r["sparsity"], int(r["seed"])) for r in rows}
    controls = {}
    for recipe in spec.finetunes if spec.finetune_steps > 0 else []:
        for seed in spec.seeds:
            control = label(CONTROL, recipe)
            name = cell_name(control, 0.0, seed)
            if name not in done:
                console.print(f"[control] {name}")
                rows.append(_control_row(spec, source, dense_metrics, seed, recipe))
                write_csv(out / "results.csv", rows)
            controls[recipe, seed] = next(metrics_of(r, specs) for r in rows
                                          if r["method"] == control and int(r["seed"]) == seed)
    cells = [(m, recipe, s, seed) for s in spec.sparsities for m in spec.methods for recipe in spec.finetunes
             for seed in spec.seeds]
    for i, (method, recipe, sparsity, seed) in enumerate(cells, 1):
        name = cell_name(label(method, recipe), sparsity, seed)
        if name in done:
            continue
        console.print(f"[{i}/{len(cells)}] {name}")
        row = _run_cell(spec, source, dense_metrics, method, recipe, sparsity, seed, device,
                        controls.get((recipe, seed)))
        rows.append(row)
        write_csv(out / "results.csv", rows)
    write_report(out, rows, dense_metrics, specs, spec, source.dense, source.samples(), device)
    return rows


def metrics_of(row: Mapping[str, Any], specs: Mapping[str, TaskSpec]) -> dict[str, dict[str, float]]:
    """A results row's metrics back as `{task: {metric: value}}`."""
    return {t: {m: float(row[f"{t}.{m}"]) for m in (k.split(".", 1)[1] for k in row if k.startswith(f"{t}."))}
            for t in specs}


def _deltas(metrics, reference, specs, suffix: str = "") -> dict[str, float]:
    """delta_T and per-task deltas of a row; NaN where a reference metric is 0 (a control that learnt
    nothing on a small test split): the relative change is undefined, the row's metrics stay."""
    try:
        delta = delta_t(metrics, reference, specs)
    except ValueError:
        return {f"delta_T{suffix}": math.nan, **{f"delta_{t}{suffix}": math.nan for t in specs}}
    return {f"delta_T{suffix}": delta.delta_t, **{f"delta_{t}{suffix}": v for t, v in delta.per_task.items()}}


def _control_row(spec: CompareSpec, source: Comparison, dense_metrics, seed: int, recipe: str) -> dict[str, Any]:
    """The dense model on the same tasks with the cells' fine-tuning budget, recipe and seed (cached)."""
    specs = source.specs
    start = time.perf_counter()
    model, path = source.control(source.schedule(seed, spec.distill if recipe == "distill" else None))
    seconds = time.perf_counter() - start
    metrics = source.evaluate(model)
    row: dict[str, Any] = {"method": label(CONTROL, recipe), "sparsity": 0.0, "seed": seed, "achieved_sparsity": 0.0,
                           **_deltas(metrics, dense_metrics, specs), **_deltas(metrics, metrics, specs, "_control")}
    for task, values in metrics.items():
        row.update({f"{task}.{k}": v for k, v in values.items()})
    row.update({"params_nonzero": sum(int((p != 0).sum()) for p in model.parameters()),
                "file_bytes": path.stat().st_size, "score_seconds": 0.0, "finetune_seconds": seconds})
    return row


def _run_cell(spec: CompareSpec, source: Comparison, dense_metrics, method: str, recipe: str, sparsity: float,
              seed: int, device: str, control_metrics: Mapping[str, Mapping[str, float]] | None = None
              ) -> dict[str, Any]:
    tasks, specs = source.tasks, source.specs
    selected = source.select()
    model = selected.model
    existing = masks_of(model)  # a masked base: its zeros stay zero and count towards the sparsity
    batches = source.scoring_batches(seed)
    name = label(method, recipe)
    start = time.perf_counter()
    scores = method_scores(method, model, specs, source.weights, batches, seed=seed, device=device)
    if spec.structured:
        achieved, per_layer = _structured(model, scores, sparsity, RULES[method], source.example())
    else:
        fusion = fuse(scores, sparsity, RULES[method], fixed=existing)
        unmask(model)
        apply_masks(model, {**existing, **fusion.masks})
        achieved, per_layer = fusion.sparsity, fusion.per_layer
    score_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if spec.finetune_steps > 0:
        model = source.finetune(model, source.schedule(seed, spec.distill if recipe == "distill" else None), name)
    finetune_seconds = time.perf_counter() - start
    metrics = source.evaluate(model)
    path = source.save(selected.replace(model=model), spec.out / "models" / f"{cell_name(name, sparsity, seed)}.safetensors",
                {"method": method, "rule": RULES[method], "sparsity": sparsity, "seed": seed, "tasks": list(tasks),
                 "structured": spec.structured, "finetune": recipe})
    row: dict[str, Any] = {
        "method": name, "sparsity": sparsity, "seed": seed, "achieved_sparsity": achieved,
        **_deltas(metrics, dense_metrics, specs),
        **(_deltas(metrics, control_metrics, specs, "_control") if control_metrics is not None else {}),
    }
    for task, values in metrics.items():
        row.update({f"{task}.{k}": v for k, v in values.items()})
    row.update({
        "params_nonzero": sum(int((p != 0).sum()) for p in model.parameters()),
        "file_bytes": path.stat().st_size, "score_seconds": score_seconds, "finetune_seconds": finetune_seconds,
    })
    write_text(spec.out / "layers" / f"{cell_name(name, sparsity, seed)}.json", json.dumps(per_layer))
    return row


def _structured(model: torch.nn.Module, scores, sparsity: float, rule: str,
                example: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Remove whole channels in place; the achieved sparsity and each layer's share of parameters removed."""
    from ..compact.structured import check_reached, structured_prune

    before = {n: p.numel() for n, p in model.named_parameters() if p.dim() > 1}
    result = structured_prune(model, example, scores, sparsity, rule)
    check_reached(result, sparsity)
    after = {n: p.numel() for n, p in model.named_parameters()}
    return result["sparsity"], {n: 1.0 - after[n] / size for n, size in before.items() if n in after}


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TaskcutError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if any(math.isnan(v) for v in values):
        raise TaskcutError(f"{what} holds NaN")
    return values


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TaskcutError(f"{what} must be comma-separated integers, got {text!r}") from None
