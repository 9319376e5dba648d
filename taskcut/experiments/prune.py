"""CUT end to end on a model file: select -> score -> fuse -> mask -> save (the `taskcut prune` stage)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import __version__
from ..compact.masking import apply_masks, masks_of, unmask
from ..data.dataset import open_for_tasks, with_class_weights
from ..errors import TaskcutError
from ..settings import MAX_BATCH
from ..fileio import check_writable, file_sha256
from ..cut.fuse import check_sparsity, fuse, parse_rule
from ..models import load, save
from ..models.io import zoo_spec
from ..cut.score import prunable_parameters
from ..cut.select import check_tasks, select


@dataclass
class PruneSummary:
    tasks: list[str]
    rule: str
    sparsity: float
    achieved: float
    keep_ratio: float
    params_before: int
    params_selected: int
    params_after: int
    bytes_before: int
    bytes_after: int
    bytes_selected_dense: int
    per_layer: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (size, sparsity)
    seconds_scoring: float = 0.0
    budget: dict[str, Any] | None = None  # with --budget: the budget, the figure reached, the sparsity chosen

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: Scoring batches and images per batch when neither an option nor a scores file says.
DEFAULT_BATCHES, DEFAULT_BATCH_SIZE = 50, 8


def prune(base: Path, tasks: Sequence[str], sparsity: float | None, out: Path, data: str, rule: str = "vote",
          batches: int | None = None, batch_size: int | None = None, force: bool = False, device: str = "cpu",
          show_progress: bool = True, structured: bool = False, scores_file: Path | None = None,
          budget: str | None = None, runtime: str = "onnxruntime", threads: int = 2,
          size: tuple[int, int] | None = None) -> PruneSummary | None:
    """Prune `base` to `tasks` at `sparsity` with CUT and write the compact model to `out`.

    With `scores_file` (written by `taskcut score` for this base model and these scoring
    settings) no forward or backward pass is run: each task's scores depend only on the
    weights its own output uses, so scores of the full model serve any task subset.
    With `budget` ("params=1.5M", "size=2MB", "macs=500M", "latency=20ms"; see
    `taskcut.cut.budget`) instead of a sparsity, the least pruning that fits it is chosen;
    latency is measured in `runtime` with `threads` on images of `size`.
    Every input is checked before any work, so a bad one writes nothing.
    """
    base, out = Path(base), Path(out)
    if scores_file is not None:  # the scoring settings are the file's; one given otherwise is refused
        from .scores import scoring_settings

        recorded = scoring_settings(scores_file)
        for name, given in (("batches", batches), ("batch_size", batch_size)):
            if given is not None and given != recorded.get(name):
                raise TaskcutError(f"--{name.replace('_', '-')} {given}: {scores_file} was scored with "
                                   f"{recorded.get(name)}; leave it out with --scores (the file's settings are used)")
        batches, batch_size = recorded.get("batches"), recorded.get("batch_size")
    batches = DEFAULT_BATCHES if batches is None else batches
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    check_writable(out, force)
    if out.resolve() == base.resolve():
        raise TaskcutError(f"--out {out} would overwrite the input model")
    if (sparsity is None) == (budget is None):
        raise TaskcutError("give either --sparsity or --budget")
    if sparsity is not None:
        check_sparsity(sparsity)
    else:
        from ..cut.budget import STRUCTURED_ONLY, parse_budget

        if parse_budget(str(budget)).kind in STRUCTURED_ONLY and not structured:
            raise TaskcutError(f"a {parse_budget(str(budget)).kind} budget needs --structured: unstructured zeros "
                               "change neither MACs nor latency")
    spec = zoo_spec(base)
    chosen = check_tasks(list(spec["model"]["tasks"]), tasks)
    parse_rule(rule, len(chosen))
    if structured and rule == "score-sum":
        raise TaskcutError("score-sum is not available for structured pruning; use vote, vote:K, majority, union "
                           "or intersection")
    if batches < 1 or not 1 <= batch_size <= MAX_BATCH:
        raise TaskcutError(f"--batches must be positive and --batch-size between 1 and {MAX_BATCH}, got {batches} "
                           f"and {batch_size}")
    model = load(base, device)
    small = select(model, chosen)
    existing = masks_of(small)  # a compact or imported pruned model: its zeros stay zero and count
    specs = small.config.task_specs()
    dataset = None
    if scores_file is None:  # scores from a file need no data: only an example image, read if needed
        dataset = open_for_tasks(data, "train", specs)
        specs = with_class_weights(specs, dataset)
        if batches * batch_size > len(dataset):
            raise TaskcutError(f"asked for {batches} batches of {batch_size} ({batches * batch_size} images), "
                               f"but the train split holds {len(dataset)}")

    def first_image() -> torch.Tensor:
        return (dataset if dataset is not None else open_for_tasks(data, "train", specs)).batch(torch.tensor([0]))["image"]

    start = time.perf_counter()
    if scores_file is not None:
        from .scores import read_scores

        scores = read_scores(scores_file, base, chosen, {"data": data, "batches": batches, "batch_size": batch_size},
                             prunable_parameters(small))
    else:
        from .scores import score_split

        scores = score_split(small, specs, dataset, batches, batch_size, device, show_progress)
        if scores is None:  # every rank holds the same summed scores; rank 0 writes
            return None
    seconds = time.perf_counter() - start
    if budget is not None:
        return _finish_budget(base, spec, model, small, first_image, scores, chosen, budget, rule, out, data, batches,
                              batch_size, seconds, structured, runtime, threads, size)
    if structured:
        return _finish_structured(base, spec, model, small, first_image, scores, chosen, sparsity, rule, out, data,
                                  batches, batch_size, seconds)
    fusion = fuse(scores, sparsity, rule, fixed=existing)
    unmask(small)
    apply_masks(small, {**existing, **fusion.masks})
    provenance = {**_provenance(base, spec), "method": "cut", "tasks": chosen, "rule": rule, "sparsity": sparsity,
                  "achieved_sparsity": fusion.sparsity, "keep_ratio": fusion.keep_ratio,
                  "score_batches": batches, "score_batch_size": batch_size, "data": data}
    save(small, out, provenance)
    dense_bytes = _dense_bytes(model, chosen)
    kept = sum(int(m.sum()) for m in fusion.masks.values())
    return PruneSummary(
        tasks=chosen, rule=rule, sparsity=sparsity, achieved=fusion.sparsity, keep_ratio=fusion.keep_ratio,
        params_before=sum(p.numel() for p in model.parameters()),
        params_selected=sum(p.numel() for p in small.parameters()),
        params_after=sum(p.numel() for p in small.parameters()) - (fusion.total - kept),
        bytes_before=base.stat().st_size, bytes_after=out.stat().st_size, bytes_selected_dense=dense_bytes,
        per_layer={n: (m.numel(), fusion.per_layer[n]) for n, m in fusion.masks.items()},
        seconds_scoring=seconds,
    )



def _dense_bytes(model: torch.nn.Module, chosen: list[str]) -> int:
    """File size of the same selected model saved dense: the yardstick for the compact file. Saved from a
    view that shares the base's modules (the trunk and the chosen heads): nothing is copied."""
    from ..models.multitask import MultiTaskModel

    config = model.config.model_copy(update={"tasks": {t: model.config.tasks[t] for t in chosen}}, deep=True)
    view = MultiTaskModel(model.trunk, {t: model.heads[t] for t in chosen}, config)
    with tempfile.TemporaryDirectory() as tmp:
        return save(view, Path(tmp) / "dense.safetensors").stat().st_size


def _provenance(base: Path, spec: dict[str, Any]) -> dict[str, Any]:
    return {"taskcut": __version__, "base": spec.get("provenance", {}), "source": str(base),
            "source_sha256": file_sha256(base)}


def _finish_budget(base: Path, spec: dict[str, Any], model: torch.nn.Module, small: torch.nn.Module, first_image,
                   scores, chosen: list[str], budget: str, rule: str, out: Path, data: str, batches: int,
                   batch_size: int, seconds: float, structured: bool, runtime: str, threads: int,
                   size: tuple[int, int] | None) -> PruneSummary:
    """The least pruning within `budget`; the file figure is measured on the file as it is written."""
    from ..api import PROVENANCE_ROOM, prune_to_budget
    from ..compact.masking import masks_of

    device = next(small.parameters()).device
    example = (torch.rand(1, 3, *size) if size else first_image()).to(device)
    provenance = {**_provenance(base, spec), "method": "cut-structured" if structured else "cut", "tasks": chosen,
                  "rule": rule, "budget": budget, "score_batches": batches, "score_batch_size": batch_size,
                  "data": data}

    def file_bytes(candidate: torch.nn.Module) -> int:  # with room for the budget report the real file adds
        with tempfile.TemporaryDirectory() as tmp:
            return save(candidate, Path(tmp) / out.name, {**provenance, **PROVENANCE_ROOM}).stat().st_size

    pruned, report = prune_to_budget(small, scores, budget, rule, structured, example, file_bytes=file_bytes,
                                     runtime=runtime, threads=threads)
    save(pruned, out, {**provenance, "sparsity": report["sparsity"], "budget_report": report})
    zeros = sum(int((~m).sum()) for m in masks_of(pruned).values())
    after = sum(p.numel() for p in pruned.parameters())
    return PruneSummary(
        tasks=chosen, rule=rule, sparsity=report["sparsity"], achieved=report["sparsity"], keep_ratio=float("nan"),
        params_before=sum(p.numel() for p in model.parameters()), params_selected=sum(p.numel() for p in small.parameters()),
        params_after=after - zeros, bytes_before=base.stat().st_size, bytes_after=out.stat().st_size,
        bytes_selected_dense=_dense_bytes(model, chosen), seconds_scoring=seconds, budget=report,
    )


def _finish_structured(base: Path, spec: dict[str, Any], model: torch.nn.Module, small: torch.nn.Module, first_image,
                       scores, chosen: list[str], sparsity: float, rule: str, out: Path, data: str, batches: int,
                       batch_size: int, seconds: float) -> PruneSummary:
    """Channel-level CUT: remove whole channels, save the smaller dense model (masked zeros stay masked)."""
    from ..compact.structured import check_reached, structured_prune

    before = {n: p.numel() for n, p in small.named_parameters()}
    example = first_image().to(next(small.parameters()).device)
    result = structured_prune(small, example, scores, sparsity, rule)  # keeps the existing zeros masked
    check_reached(result, sparsity)
    provenance = {**_provenance(base, spec), "method": "cut-structured", "tasks": chosen, "rule": rule,
                  "sparsity": sparsity, "achieved_sparsity": result["sparsity"], "score_batches": batches,
                  "score_batch_size": batch_size, "data": data}
    save(small, out, provenance)
    dense_bytes = _dense_bytes(model, chosen)
    after = dict(small.named_parameters())
    return PruneSummary(
        tasks=chosen, rule=rule, sparsity=sparsity, achieved=result["sparsity"], keep_ratio=float("nan"),
        params_before=sum(p.numel() for p in model.parameters()), params_selected=result["parameters_before"],
        params_after=result["parameters_after"], bytes_before=base.stat().st_size, bytes_after=out.stat().st_size,
        bytes_selected_dense=dense_bytes,
        per_layer={n: (size, 1.0 - after[n].numel() / size) for n, size in before.items()
                   if n in after and after[n].dim() > 1},
        seconds_scoring=seconds,
    )
