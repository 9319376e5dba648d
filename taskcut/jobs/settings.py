"""One typed settings object per job, shared by the command line's options, the Python keywords
and the fleet's YAML sections. Sizes are bounded here, before any work; a bad value is one line
naming its option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError

from ..errors import TaskcutError
from ..settings import MAX_BATCH, MAX_IMAGE_SIDE, MAX_THREADS, Strict

Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]


class ScoringSettings(Strict):
    """Which train batches the CUT scores are summed over. Unset values are the source's defaults
    (`Source.scoring`), or with a scores file the file's."""

    batches: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)


class PruneSettings(Strict):
    """`taskcut prune`: keep `tasks`, at a `sparsity` or within a `budget`."""

    tasks: list[str] = Field(min_length=1)
    sparsity: float | None = None
    budget: str | None = None
    rule: str = "vote"
    structured: bool = False
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    #: Scores of every task written by `taskcut score` for this source: no forward or backward pass.
    scores: Path | None = None
    #: Where a latency budget is measured, and the input size of a latency or MACs budget.
    runtime: str = "onnxruntime"
    threads: int = Field(default=2, ge=1, le=MAX_THREADS)
    size: tuple[Side, Side] | None = None


S = TypeVar("S", bound=Strict)

#: The command-line option of each settings field, for one-line errors.
OPTIONS = {"batches": "--batches", "batch_size": "--batch-size", "threads": "--threads", "size": "--size",
           "tasks": "--tasks", "sparsity": "--sparsity", "budget": "--budget", "rule": "--fusion"}


def make(kind: type[S], **values: Any) -> S:
    """`kind(**values)`, a bad value as one `TaskcutError` naming its option."""
    try:
        return kind(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = [str(p) for p in err["loc"] if isinstance(p, str)]
        option = OPTIONS.get(where[-1], ".".join(where)) if where else kind.__name__
        raise TaskcutError(f"{option}: {err['msg']}") from None
