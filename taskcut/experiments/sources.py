"""Where a comparison's model, tasks and data come from: a taskcut model file with a `--data` set
(the zoo), or an own model's YAML (its factory, weights, tasks and data). Both offer the same
jobs, so `taskcut compare` runs one code path for either: select, scoring batches, fine-tune,
evaluate, the dense control, save. The zoo's jobs are the calls it always made (its figures
do not move); an own model's are the public API's.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..config import TrainConfig
from ..cut.select import check_tasks, select
from ..errors import TaskcutError
from ..tasks.dense import TaskSpec

#: A comparison's settings (`taskcut.experiments.compare.CompareSpec`; not imported here: compare imports
#: this module, and no import circle is allowed, not even for types).
CompareSpec = Any


class Source:
    """One base model, the chosen tasks, and the jobs a comparison runs on them."""

    #: The chosen tasks in the model's order.
    tasks: list[str]
    #: Task specs of the chosen tasks (as scored, fine-tuned and evaluated) and their loss weights.
    specs: dict[str, TaskSpec]
    weights: dict[str, float]
    #: The dense base restricted to the chosen tasks (the reference of every delta_T).
    dense: nn.Module

    def settings(self) -> dict[str, Any]:
        """What a results folder records of the source, to refuse resuming with another one."""
        raise NotImplementedError

    def select(self) -> nn.Module:
        """A fresh copy of the base holding the chosen tasks only."""
        raise NotImplementedError

    def scoring_batches(self, seed: int) -> Iterable[Mapping[str, torch.Tensor]]:
        raise NotImplementedError

    def example(self) -> torch.Tensor:
        """One input (a batch of one), for structured pruning's trace."""
        raise NotImplementedError

    def finetune(self, model: nn.Module, cfg: TrainConfig, label: str) -> nn.Module:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Metrics on the test split."""
        raise NotImplementedError

    def control(self, cfg: TrainConfig) -> tuple[nn.Module, Path]:
        """The dense control fine-tuned with `cfg` (cached), and its file."""
        raise NotImplementedError

    def save(self, model: nn.Module, path: Path, provenance: dict[str, Any]) -> Path:
        raise NotImplementedError

    def samples(self) -> Any:
        """The test split as a data set to draw sample predictions from, or None where it is not one."""
        return None


class ZooSource(Source):
    """A taskcut model file and a `KIND:PATH` data set."""

    def __init__(self, spec: CompareSpec, device: str, show_progress: bool) -> None:
        from ..data.dataset import open_for_tasks, with_class_weights
        from ..models import load

        self.spec, self.device, self.show_progress = spec, device, show_progress
        self.tasks = zoo_tasks(spec)
        self.train_set = _train_set(spec, self.tasks)
        self.base = load(spec.base, device)
        self.dense = select(self.base, self.tasks)
        self.specs = with_class_weights(self.dense.config.task_specs(), self.train_set)
        self.weights = {t: c.loss_weight for t, c in self.dense.config.tasks.items()}
        self.val_set, self.test_set = (open_for_tasks(spec.data, split, self.specs) for split in ("val", "test"))

    def settings(self) -> dict[str, Any]:
        from ..fileio import file_sha256

        spec = self.spec
        return {"base": str(spec.base), "base_sha256": file_sha256(spec.base), "tasks": self.tasks, "data": spec.data,
                "finetune_steps": spec.finetune_steps, "batches": spec.batches, "batch_size": spec.batch_size,
                "lr": spec.lr, "finetune_batch_size": spec.finetune_batch_size}

    def select(self) -> nn.Module:
        return select(self.base, self.tasks)

    def scoring_batches(self, seed: int) -> Iterable[Mapping[str, torch.Tensor]]:
        from ..data.dataset import iterate_batches

        generator = torch.Generator().manual_seed(seed)
        return islice(iterate_batches(self.train_set, self.spec.batch_size, shuffle=True, generator=generator),
                      self.spec.batches)

    def example(self) -> torch.Tensor:
        return self.train_set.batch(torch.tensor([0]))["image"].to(self.device)

    def finetune(self, model: nn.Module, cfg: TrainConfig, label: str) -> nn.Module:
        from ..train.distill import Teacher
        from ..train.fit import fit

        teacher = Teacher(self.select(), cfg.distill, self.specs) if cfg.distill is not None else None
        return fit(model, self.specs, self.weights, cfg, self.train_set, self.val_set, self.device,
                   self.show_progress, label=label, teacher=teacher).model

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        from ..train.evaluate import evaluate

        return evaluate(model, self.test_set, self.specs, device=self.device)

    def control(self, cfg: TrainConfig) -> tuple[nn.Module, Path]:
        from ..models import load
        from .pipeline import dense_control

        path = dense_control(self.spec.base, self.tasks, cfg, self.spec.data, None, self.device, self.show_progress)
        return load(path, self.device), path

    def save(self, model: nn.Module, path: Path, provenance: dict[str, Any]) -> Path:
        from ..models import save

        return save(model, path, provenance)

    def samples(self) -> Any:
        return self.test_set


class OwnSource(Source):
    """An own model's YAML: its factory and weights, its tasks, its data's train/val/test splits."""

    def __init__(self, spec: CompareSpec, device: str, show_progress: bool) -> None:
        from .own import first_input, load_own_config

        self.spec, self.device, self.show_progress = spec, device, show_progress
        self.cfg = load_own_config(Path(str(spec.config)))
        self.tasks = check_tasks(list(self.cfg.specs), spec.tasks)
        self.specs = {t: self.cfg.specs[t] for t in self.tasks}
        self.weights = {t: self.cfg.weights()[t] for t in self.tasks}
        self.base = self.cfg.build().to(device)
        self._example = first_input(self.cfg, "train").to(device)
        self.dense = self.select()

    def settings(self) -> dict[str, Any]:
        from .scores import own_base_digest

        spec = self.spec
        return {"config": str(spec.config), "base_digest": own_base_digest(self.cfg), "tasks": self.tasks,
                "data": self.cfg.data.model_dump(mode="json"), "finetune_steps": spec.finetune_steps,
                "batches": spec.batches, "lr": spec.lr}

    def select(self) -> nn.Module:
        return select(self.base, self.tasks, self._example)

    def scoring_batches(self, seed: int) -> Iterable[Mapping[str, torch.Tensor]]:
        from ..api import Batches

        # the user's data factory decides batch size and order: every method scores the same batches
        return islice(Batches(self.cfg.split("train"), self.cfg.transform(), self.device), self.spec.batches)

    def example(self) -> torch.Tensor:
        return self._example[:1]

    def finetune(self, model: nn.Module, cfg: TrainConfig, label: str) -> nn.Module:
        from ..api import finetune_model

        splits = self.cfg.splits()
        return finetune_model(model, self.specs, splits["train"], steps=cfg.steps, val_batches=splits.get("val"),
                              lr=cfg.lr, weights=self.weights, val_every=cfg.val_every, seed=cfg.seed,
                              transform=self.cfg.transform(), device=self.device, show_progress=self.show_progress,
                              teacher=self.select() if cfg.distill is not None else None, distill=cfg.distill)

    def evaluate(self, model: nn.Module) -> dict[str, dict[str, float]]:
        from ..api import evaluate_model

        return evaluate_model(model, self.specs, self.cfg.split("test"), transform=self.cfg.transform(),
                              device=self.device)["metrics"]

    def control(self, cfg: TrainConfig) -> tuple[nn.Module, Path]:
        from ..jobs.source import YamlSource

        schedule = {"steps": cfg.steps, "lr": cfg.lr, "val_every": cfg.val_every, "seed": cfg.seed,
                    "distill": cfg.distill.model_dump() if cfg.distill is not None else None}
        model, path = YamlSource(Path(str(self.spec.config))).dense_control(self.tasks, schedule, self.device,
                                                                            self.show_progress)
        return model.to(self.device), path

    def save(self, model: nn.Module, path: Path, provenance: dict[str, Any]) -> Path:
        from ..models import save

        return save(model, path, provenance, factory=self.cfg.model.factory, kwargs=self.cfg.model.kwargs,
                    tasks=self.specs)


def zoo_tasks(spec: CompareSpec) -> list[str]:
    """The chosen tasks of a zoo comparison, in the model's order (read from the file's header only)."""
    from ..models.io import zoo_spec

    return check_tasks(list(zoo_spec(spec.base)["model"]["tasks"]), spec.tasks)


def _train_set(spec: CompareSpec, tasks: list[str]) -> Any:
    from ..data.dataset import open_for_tasks
    from ..models.io import zoo_spec

    model_tasks = zoo_spec(spec.base)["model"]["tasks"]
    specs = {t: TaskSpec.from_dict(t, model_tasks[t]) for t in tasks}
    train = open_for_tasks(spec.data, "train", specs)
    if spec.batches * spec.batch_size > len(train):
        raise TaskcutError(f"asked for {spec.batches} scoring batches of {spec.batch_size}, "
                           f"but the train split holds {len(train)}")
    return train


def check_source(spec: CompareSpec) -> list[str]:
    """Check the model source before anything is written (its file or YAML, the tasks, the data);
    the chosen tasks in the model's order."""
    if spec.config is not None:
        from .own import load_own_config

        cfg = load_own_config(Path(str(spec.config)))
        return check_tasks(list(cfg.specs), spec.tasks)
    tasks = zoo_tasks(spec)
    _train_set(spec, tasks)
    return tasks


def open_source(spec: CompareSpec, device: str, show_progress: bool) -> Source:
    return (OwnSource if spec.config is not None else ZooSource)(spec, device, show_progress)
