"""`taskcut score`: every task of a source's base model scored once, kept in a file for `prune --scores`.

A task's CUT scores |w * dL_t/dw| depend only on the weights its own output uses, so the
scores of the full model are exactly those of any selection holding that task: one pass
(one forward per batch, one backward per task) serves every device of a fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
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
                 device: str, show_progress: bool, exact: bool = True) -> tuple[Scores | None, ScoringSettings]:
    """CUT scores of `model` over the source's scoring batches, summed in float64 over every torchrun
    process (each scores its share of whole batches, so the sums do not depend on the process count);
    None on ranks other than 0. A train split shorter than `scoring.batches` is refused when the number
    was asked for (`exact`); else (the default number) every batch it has is scored, and the settings
    returned say how many."""
    place = world()
    assert scoring.batches is not None
    if scoring.batches < place.size:
        raise TaskcutError(f"--batches {scoring.batches} is fewer than the {place.size} processes sharing them")
    batches, count = source.scoring_batches(specs, scoring, place.rank, place.size, device)
    seen = [0]

    def counted() -> Iterable[Mapping[str, torch.Tensor]]:
        for batch in batches:
            seen[0] += 1
            yield batch

    local = cut_scores(model, specs, counted(), device=device, show_progress=show_progress and place.main,
                       total=count, float64=True)
    if seen[0] < count and not exact and place.size == 1:  # the default number, more than the split has
        scoring = scoring.model_copy(update={"batches": seen[0]})
    elif seen[0] < count:  # a data factory's split shorter than asked for: the file would record a lie
        raise TaskcutError(f"--batches {scoring.batches}: the train split gave {seen[0]} of the {count} batches "
                           f"{'this process scores' if place.size > 1 else 'asked for'}; give --batches {seen[0]} "
                           "or fewer")
    scores = reduce_scores(local)
    return (scores if place.main else None), scoring


def score(source: Source, settings: ScoringSettings, out: Path, *, force: bool = False, device: str = "cpu",
          show_progress: bool = True) -> ScoreResult | None:
    """Score every task of the source's base on its first `settings.batches` train batches; write them to
    `out` with the base's identity and the settings. None on torchrun ranks other than 0."""
    from ..cut.scores_file import write_scores_file

    out = Path(out)
    check_writable(out, force)
    source.protect(out)
    scoring, record = source.scoring(settings, None, None)
    base = source.open(device, fresh=True)  # scoring writes gradients into it
    tasks = source.task_names()
    specs = source.check_scoring(source.specs(base, tasks), scoring)
    scores, scoring = score_source(source, base, specs, scoring, device, show_progress,
                                   exact=settings.batches is not None)
    if scores is None:
        return None
    record = source.scoring_record(scoring)
    write_scores_file(out, source.identity(), record, scores)
    return ScoreResult(out, tasks, scoring, record)

