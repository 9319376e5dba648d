"""`taskcut score`: every task of a source's base model scored once, kept in a file for `prune --scores`.

A task's CUT scores |w * dL_t/dw| depend only on the weights its own output uses, so the
scores of the full model are exactly those of any selection holding that task: one pass
(one forward per batch, one backward per task) serves every device of a fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..cut.score import Scores, reduce_scores, score as cut_scores
from ..errors import TaskcutError
from ..fileio import check_writable
from ..tasks import TaskSpec
from ..train.distributed import world
from .settings import ScoringSettings
from .source import Source


@dataclass
class ScoreResult:
    """What `score` wrote: the file, the tasks scored, the settings used and what the file records."""

    path: Path
    tasks: list[str]
    scoring: ScoringSettings
    record: dict[str, Any]


def score_source(source: Source, model: nn.Module, specs: Mapping[str, TaskSpec], scoring: ScoringSettings,
                 device: str, show_progress: bool) -> Scores | None:
    """CUT scores of `model` over the source's scoring batches, summed in float64 over every torchrun
    process (each scores its share of whole batches, so the sums do not depend on the process count);
    None on ranks other than 0."""
    place = world()
    assert scoring.batches is not None
    if scoring.batches < place.size:
        raise TaskcutError(f"--batches {scoring.batches} is fewer than the {place.size} processes sharing them")
    batches, count = source.scoring_batches(specs, scoring, place.rank, place.size, device)
    scores = reduce_scores(cut_scores(model, specs, batches, device=device, show_progress=show_progress and place.main,
                                      total=count, float64=True))
    return scores if place.main else None


def score(source: Source, settings: ScoringSettings, out: Path, *, force: bool = False, device: str = "cpu",
          show_progress: bool = True) -> ScoreResult | None:
    """Score every task of the source's base on its first `settings.batches` train batches; write them to
    `out` with the base's identity and the settings. None on torchrun ranks other than 0."""
    from ..experiments.scores import write_scores_file

    out = Path(out)
    check_writable(out, force)
    scoring, record = source.scoring(settings, None, None)
    base = source.open(device, fresh=True)  # scoring writes gradients into it
    tasks = source.task_names()
    specs = source.check_scoring(source.specs(base, tasks), scoring)
    scores = score_source(source, base, specs, scoring, device, show_progress)
    if scores is None:
        return None
    write_scores_file(out, source.identity(), record, scores)
    return ScoreResult(out, tasks, scoring, record)

