"""What a comparison runs its cells on: one model source (`taskcut.jobs.source`: a model file with a
data set, or an own model's YAML), the chosen tasks, and the jobs every cell and control repeat
(select, scoring batches, fine-tune, evaluate, the dense control, save). There is one class for
both sources: each job asks the source, as `taskcut prune`, `finetune` and `evaluate` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..config import TrainConfig
from ..cut.select import check_tasks
from ..jobs.settings import FinetuneSettings, ScoringSettings
from ..jobs.source import Source, open_source
from ..models.record import TaskModel
from ..tasks.dense import TaskSpec

#: A comparison's settings (`taskcut.workflows.compare.CompareSpec`; not imported here: compare imports
#: this module, and no import circle is allowed, not even for types).
CompareSpec = Any


def _source(spec: CompareSpec) -> Source:
    return open_source(spec.base, spec.config, spec.data)


def check_source(spec: CompareSpec) -> list[str]:
    """Check the model source before anything is written (its file or YAML, the tasks, the data and
    that the train split holds the scoring batches); the chosen tasks in the model's order."""
    source = _source(spec)
    tasks = check_tasks(source.task_names(), spec.tasks)
    scoring, _ = source.scoring(ScoringSettings(batches=spec.batches, batch_size=spec.batch_size), None, None)
    source.check_scoring(source.declared_specs(tasks), scoring)
    return tasks


class Comparison:
    """One base model, the chosen tasks, and the jobs a comparison runs on them."""

    def __init__(self, spec: CompareSpec, device: str, show_progress: bool) -> None:
        self.spec, self.device, self.show_progress = spec, device, show_progress
        self.source = _source(spec)
        #: The chosen tasks in the model's order.
        self.tasks = check_tasks(self.source.task_names(), spec.tasks)
        self.scoring, _ = self.source.scoring(ScoringSettings(batches=spec.batches, batch_size=spec.batch_size),
                                              None, None)
        self.base = self.source.open(device)
        #: The dense base restricted to the chosen tasks (the reference of every delta_T).
        self.dense = self.select().model
        #: Task specs of the chosen tasks (as scored, fine-tuned and evaluated) and their loss weights.
        self.specs = self.source.check_scoring(self.source.specs(self.dense, self.tasks), self.scoring)
        self.weights = self.source.loss_weights(self.dense, self.specs)

    def settings(self) -> dict[str, Any]:
        """What a results folder records of the source, to refuse resuming with another one."""
        spec = self.spec
        record = {**self.source.record(), "tasks": self.tasks, "finetune_steps": spec.finetune_steps,
                  "batches": spec.batches, "lr": spec.lr}
        for key, value in (("batch_size", self.scoring.batch_size), ("finetune_batch_size", self._finetune_batch())):
            if value is not None:  # an own model's data factory makes its batches unless a size is given
                record[key] = value
        return record

    def _finetune_batch(self) -> int | None:
        given = self.spec.finetune_batch_size
        return given if given is not None else self.source.FINETUNE_BATCH_SIZE

    def select(self) -> TaskModel:
        """A fresh copy of the base holding the chosen tasks only (a record: what saving it needs)."""
        return self.source.select(self.base, self.tasks, self.device)

    def scoring_batches(self, seed: int) -> Iterable[Mapping[str, torch.Tensor]]:
        return self.source.sampled_batches(self.specs, self.scoring, seed, self.device)

    def example(self) -> torch.Tensor:
        """One input (a batch of one), for structured pruning's trace."""
        return self.source.example(self.specs, self.device)[:1]

    def schedule(self, seed: int, distill: Any) -> FinetuneSettings:
        """The one fine-tuning budget of a comparison: every cell and the control get exactly this (a
        distilled cell and its control add the same distillation)."""
        steps = self.spec.finetune_steps
        return FinetuneSettings(steps=max(1, steps), batch_size=self.spec.finetune_batch_size, lr=self.spec.lr,
                                val_every=max(1, steps // 4), seed=seed, distill=distill)

    def train_config(self, schedule: FinetuneSettings) -> TrainConfig:
        """The schedule as the source runs it (`fit`'s settings)."""
        return self.source.train_config(schedule)

    def finetune(self, model: nn.Module, schedule: FinetuneSettings, label: str) -> nn.Module:
        from ..train.distill import Teacher
        from ..train.fit import fit

        cfg = self.train_config(schedule)
        teacher = Teacher(self.select().model, cfg.distill, self.specs) if cfg.distill is not None else None
        train, val = self.source.fit_data(model, self.specs, schedule, self.device)
        return fit(model, self.specs, self.weights, cfg, train, val, self.device, self.show_progress, label=label,
                   teacher=teacher).model

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Metrics on the test split."""
        return self.source.metrics(model, self.specs, self.source.split_data(self.specs, "test", self.device),
                                   "standard", self.device)

    def control(self, schedule: FinetuneSettings) -> tuple[nn.Module, Path]:
        """The dense control fine-tuned with `schedule` (cached), and its file."""
        return self.source.control_of(self.tasks, schedule, self.device, self.show_progress)

    def save(self, model: TaskModel, path: Path, provenance: dict[str, Any]) -> Path:
        return self.source.save(model.replace(tasks=dict(self.specs)), path, provenance)

    def samples(self) -> Any:
        """The test split as a data set to draw sample predictions from, or None where it is not one."""
        return self.source.samples(self.specs)


def open_comparison(spec: CompareSpec, device: str, show_progress: bool) -> Comparison:
    return Comparison(spec, device, show_progress)


def chosen_specs(spec: CompareSpec) -> dict[str, TaskSpec]:
    """The chosen tasks' specs in the model's order, as the source declares them (a file's header only)."""
    source = _source(spec)
    return source.declared_specs(check_tasks(source.task_names(), spec.tasks))
