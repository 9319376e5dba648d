"""One typed settings object per job, shared by the command line's options, the Python keywords
and the fleet's YAML sections. Sizes are bounded here, before any work; a bad value is one line
naming its option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError

from ..config import DistillConfig, TrainConfig
from ..errors import TaskcutError
from ..settings import MAX_BATCH, MAX_IMAGE_SIDE, MAX_ROUND_TO, MAX_THREADS, Strict

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
    #: The device's runtime, int8 or fp32, and threads: a size, transport, memory or latency budget is
    #: measured on the file that runtime loads (a latency one in onnxruntime fp32 on 2 threads when no
    #: runtime is given; refused for other budgets). `size` is the input a latency, MACs or memory
    #: budget is measured at.
    runtime: str | None = None
    int8: bool = False
    threads: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    size: tuple[Side, Side] | None = None
    #: Structured: wide layers keep a multiple of this many channels (default: with a budget measured in a
    #: runtime, given or ONNX Runtime for latency, the step measured for it, `taskcut.deploy.widths`;
    #: else 8, with single channels where 8 cannot reach a sparsity).
    round_to: int | None = Field(default=None, ge=1, le=MAX_ROUND_TO)


class FinetuneSettings(Strict):
    """`taskcut finetune`: the schedule, distillation and checkpoints."""

    steps: int = Field(default=300, ge=1)
    #: Images per step: default 32 on a data set; an own model's batches are re-batched to it when given.
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    lr: float = Field(default=5e-4, gt=0)
    val_every: int = Field(default=50, ge=1)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    #: The dense model teaches the compact one (`taskcut.train.distill`).
    distill: DistillConfig | None = None
    #: The dense teacher's file (default: the model this one was pruned from, or an own model's base).
    teacher: Path | None = None
    checkpoint_every: int = Field(default=0, ge=0)
    resume: bool = False
    #: A preset's finetune section (weight decay, learning-rate steps): replaces the schedule above.
    schedule: TrainConfig | None = None
    #: Random crops of this size while training (a preset's, on real data sets).
    crop: tuple[Side, Side] | None = None


class EvaluateSettings(Strict):
    """`taskcut evaluate`: which split, against what, by which convention."""

    split: Literal["train", "val", "test"] = "test"
    #: The dense model delta_T is measured against (an own model's: `base`, its YAML's base model).
    baseline: Path | None = None
    #: Also delta_T against the baseline fine-tuned like the model (None: when the model was fine-tuned).
    control: bool | None = None
    metrics: str = "standard"


class ExportSettings(Strict):
    """`taskcut export`: the runtime's format, int8, and the split the file is evaluated on."""

    format: str = "onnx"
    int8: bool = False
    split: Literal["train", "val", "test"] = "test"
    #: Height and width of the sample inputs where there is no data.
    size: tuple[Side, Side] | None = None


S = TypeVar("S", bound=Strict)

#: The command-line option of each settings field, for one-line errors.
OPTIONS = {"batches": "--batches", "batch_size": "--batch-size", "threads": "--threads", "size": "--size",
           "tasks": "--tasks", "sparsity": "--sparsity", "budget": "--budget", "rule": "--fusion", "steps": "--steps",
           "lr": "--lr", "val_every": "--val-every", "checkpoint_every": "--checkpoint-every", "split": "--split",
           "format": "--format", "metrics": "--metrics"}


def make(kind: type[S], **values: Any) -> S:
    """`kind(**values)`, a bad value as one `TaskcutError` naming its option."""
    try:
        return kind(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = [str(p) for p in err["loc"] if isinstance(p, str)]
        option = OPTIONS.get(where[-1], ".".join(where)) if where else kind.__name__
        raise TaskcutError(f"{option}: {err['msg']}") from None
