"""`taskcut prune`: select -> score (or read the scores file) -> cut -> save, for any source."""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..cut.budget import ON_ARTIFACT
from ..cut.fuse import check_sparsity, parse_rule
from ..cut.prune import PROVENANCE_ROOM, prune_scored
from ..errors import TaskcutError
from ..fileio import check_writable
from ..tasks import TaskSpec
from .settings import PruneSettings
from .source import Source, tasks_of


@dataclass
class PruneResult:
    """What `prune` made: the compact model and its tasks, the file and the figures, how it was made."""

    model: nn.Module
    tasks: list[str]
    specs: dict[str, TaskSpec]
    path: Path
    rule: str
    #: The sparsity asked for (with a budget: chosen) and reached; unstructured: of the prunable
    #: weights, structured: of the parameters.
    sparsity: float
    achieved: float
    keep_ratio: float
    #: Parameters of the base, of the selected model, and non-zero ones of the compact model.
    params_before: int
    params_selected: int
    params_after: int
    #: Bytes of the base's file and of the compact file (`bytes_selected_dense`: of the selected model
    #: saved dense; a model file's is measured when first asked for, and a fleet never asks).
    bytes_before: int
    bytes_after: int
    dense_bytes: Callable[[], int] = field(repr=False, default=lambda: 0)
    per_layer: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (size, fraction removed)
    left_whole: list[str] = field(default_factory=list)
    seconds_scoring: float = 0.0
    budget: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def bytes_selected_dense(self) -> int:
        return self.dense_bytes()


def _to(kind: str | None) -> str:
    return "with --sparsity" if kind is None else f"to a {kind} budget"


def deployment_of(source: Source, settings: PruneSettings, specs: dict[str, TaskSpec]) -> Any:
    """Where the budget is measured: the runtime's file for a size, transport, memory or latency budget
    given a runtime (int8 calibrated on the train split), ONNX Runtime fp32 for a latency one without;
    None otherwise (a size budget without a runtime: taskcut's own file)."""
    from ..cut.budget import parse_budget
    from ..deploy.artifact import Deployment

    kind = parse_budget(settings.budget).kind if settings.budget is not None else None
    if kind not in ON_ARTIFACT or (settings.runtime is None and kind != "latency"):
        return None
    return Deployment(settings.runtime or "onnxruntime", settings.int8, settings.threads or 2,
                      source.calibration(specs) if settings.int8 else None)


def check_prune(source: Source, settings: PruneSettings) -> list[str]:
    """Every refusal that needs no work; the chosen tasks in the model's order."""
    if (settings.sparsity is None) == (settings.budget is None):
        raise TaskcutError("give either --sparsity or --budget")
    kind = None
    if settings.sparsity is not None:
        check_sparsity(settings.sparsity)
    else:
        from ..cut.budget import check_measurable, parse_budget

        kind = parse_budget(settings.budget).kind
        check_measurable(kind, settings.structured, settings.runtime)
    if kind not in ON_ARTIFACT:
        for option, value in (("--runtime", settings.runtime), ("--threads", settings.threads)):
            if value is not None:
                raise TaskcutError(f"{option} is the device's runtime a size, transport, memory or latency budget is "
                                   f"measured in; it does not apply {_to(kind)}")
    if settings.int8 and settings.runtime is None:
        raise TaskcutError("--int8 measures a budget on the runtime's int8 file: give --runtime too")
    if settings.threads is not None and settings.runtime is None and kind != "latency":
        raise TaskcutError(f"--threads is what the runtime runs with; without --runtime a {kind} budget is measured "
                           "on taskcut's own file")
    if kind in ON_ARTIFACT and (settings.runtime is not None or kind == "latency"):
        from ..deploy.bench import check_runtime

        check_runtime(settings.runtime or "onnxruntime", settings.int8)
    if settings.round_to is not None and not settings.structured:
        raise TaskcutError("--round-to is the channel step of structured pruning; it does not apply without "
                           "--structured")
    if settings.size is not None and kind not in ("latency", "macs", "memory"):
        raise TaskcutError(f"--size is the input a latency, MACs or memory budget is measured at; it does not "
                           f"apply {_to(kind)}")
    chosen = tasks_of(source, settings.tasks)
    parse_rule(settings.rule, len(chosen))
    if settings.structured and settings.rule == "score-sum":
        raise TaskcutError("score-sum is not available for structured pruning; use vote, vote:K, majority, union "
                           "or intersection")
    return chosen


def prune(source: Source, settings: PruneSettings, out: Path, *, force: bool = False, device: str = "cpu",
          show_progress: bool = True) -> PruneResult | None:
    """Prune the source's base to `settings.tasks` with CUT and write the compact model to `out`.

    With `settings.scores` (written by `score` for this base) no forward or backward pass is run:
    each task's scores depend only on the weights its own output uses, so scores of the full model
    serve any task subset, and the scoring settings are the file's. With a budget instead of a
    sparsity, the least pruning that fits it is chosen (`taskcut.cut.budget`). Every input is
    checked before any work, so a bad one writes nothing. None on torchrun ranks other than 0.
    """
    from ..cut.score import prunable_parameters
    from ..cut.scores_file import read_scores, scoring_settings
    from .scoring import score_source

    out = Path(out)
    recorded = scoring_settings(settings.scores) if settings.scores is not None else None
    scoring, record = source.scoring(settings.scoring, recorded, settings.scores)
    check_writable(out, force)
    source.protect(out)
    chosen = check_prune(source, settings)
    base = source.open(device)
    specs = source.specs(base, chosen)
    selected = source.select(base, chosen, device).replace(tasks=specs)
    small = selected.model
    if settings.scores is None:
        scored_specs = source.check_scoring(specs, scoring)  # the train split holds the batches: before any work
    start = time.perf_counter()
    if settings.scores is not None:
        scores = read_scores(settings.scores, source.name, chosen, record, prunable_parameters(small),
                             base_sha256=source.identity())
    else:
        scores, scoring = score_source(source, small, scored_specs, scoring, device, show_progress,
                                       exact=settings.scoring.batches is not None)
        if scores is None:  # every rank holds the same summed scores; rank 0 writes
            return None
    seconds = time.perf_counter() - start
    method = "cut-structured" if settings.structured else "cut"
    provenance = {**source.provenance(), "method": method, "tasks": chosen, "rule": settings.rule}
    dense_bytes = source.dense_bytes_later(base, selected, chosen)  # before the cut: `small` is cut in place
    params_selected = sum(p.numel() for p in small.parameters())

    def file_bytes(candidate: nn.Module) -> int:  # with room for the budget report the real file adds
        with tempfile.TemporaryDirectory() as tmp:
            budgeted = {**provenance, "budget": settings.budget, **source.scoring_provenance(scoring),
                        **PROVENANCE_ROOM}
            return source.save(selected.replace(model=candidate), Path(tmp) / out.name, budgeted).stat().st_size

    budgeted = settings.budget is not None
    example = source.example(specs, device, settings.size if budgeted else None) \
        if budgeted or settings.structured else None
    cut = prune_scored(small, scores, sparsity=settings.sparsity, budget=settings.budget, rule=settings.rule,
                       structured=settings.structured, example=example, file_bytes=file_bytes,
                       deployment=deployment_of(source, settings, specs), round_to=settings.round_to,
                       structured_example=None if budgeted or example is None else example[:1])
    if settings.structured:
        provenance["round_to"] = cut.round_to
    if budgeted:
        provenance.update({"budget": settings.budget, **source.scoring_provenance(scoring),
                           "sparsity": cut.sparsity, "budget_report": cut.budget})
    else:
        provenance.update({"sparsity": settings.sparsity, "achieved_sparsity": cut.achieved})
        if not settings.structured:
            provenance["keep_ratio"] = cut.keep_ratio
        provenance.update(source.scoring_provenance(scoring))
    source.save(selected.replace(model=cut.model), out, provenance)
    return PruneResult(
        model=cut.model, tasks=chosen, specs=specs, path=out, rule=settings.rule, sparsity=cut.sparsity,
        achieved=cut.achieved, keep_ratio=cut.keep_ratio, params_before=sum(p.numel() for p in base.parameters()),
        params_selected=params_selected, params_after=cut.params_after, bytes_before=source.base_bytes(base),
        bytes_after=out.stat().st_size, dense_bytes=dense_bytes, per_layer=cut.per_layer,
        left_whole=cut.left_whole, seconds_scoring=seconds, budget=cut.budget, provenance=provenance)
