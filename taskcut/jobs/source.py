"""Where a job's model, tasks and data come from: a taskcut model file with a `KIND:PATH` data set
(the zoo, or any model saved by taskcut), or an own model's YAML (its factory, weights, tasks and
data). Both answer the same questions, so every job runs one code path for either; what differs
is only how each answer is found. An option that cannot apply to a source is refused by it in
one line (`Source.refuse`).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .. import __version__
from ..cut.select import check_tasks, select
from ..errors import TaskcutError
from ..tasks import TaskSpec
from .settings import ScoringSettings

#: Scoring batches, and images per batch of a data set, when neither an option nor a scores file says.
DEFAULT_BATCHES, DEFAULT_BATCH_SIZE = 50, 8


class Source:
    """A base model, its tasks and its data splits."""

    #: What messages call it: the model file or the YAML.
    name: Path
    #: What a refused option is told: why it cannot apply to this source.
    REASONS: dict[str, str] = {}

    def refuse(self, given: Mapping[str, object]) -> None:
        """Options this source cannot apply are refused in one line, never ignored."""
        for option, value in given.items():
            if value is not None and option in self.REASONS:
                raise TaskcutError(f"{option} does not apply {self.REASONS[option]}; leave it out")

    def task_names(self) -> list[str]:
        """Every task of the base model, in its order."""
        raise NotImplementedError

    def identity(self) -> str:
        """What identifies the base (a scores file records it)."""
        raise NotImplementedError

    def open(self, device: str) -> nn.Module:
        """The base model on `device`."""
        raise NotImplementedError

    def select(self, base: nn.Module, tasks: list[str], device: str) -> nn.Module:
        """A copy of the base holding `tasks` only (checked to run on the data)."""
        raise NotImplementedError

    def specs(self, model: nn.Module, tasks: list[str]) -> dict[str, TaskSpec]:
        """The task specs of `tasks` (as the model holds them)."""
        raise NotImplementedError

    def scoring(self, given: ScoringSettings, recorded: Mapping[str, Any] | None,
                scores_file: Path | None) -> tuple[ScoringSettings, dict[str, Any]]:
        """The scoring settings to use (given, else a scores file's, else the defaults) and what a
        scores file records of them. A setting given that differs from the file's is refused."""
        raise NotImplementedError

    def check_scoring(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings) -> dict[str, TaskSpec]:
        """Check the train split holds the batches asked for, before any work; the specs to score with."""
        return dict(specs)

    def scoring_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, rank: int, size: int,
                        device: str) -> tuple[Iterable[Mapping[str, torch.Tensor]], int]:
        """This process's share of the scoring batches (every `size`-th from `rank`), and how many."""
        raise NotImplementedError

    def example(self, specs: Mapping[str, TaskSpec], device: str, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Inputs from the train split of a model with `specs` (or one random input of `size`): what
        budgets are measured on and structured pruning traces."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """What a file made from this source records of it."""
        raise NotImplementedError

    def scoring_provenance(self, scoring: ScoringSettings) -> dict[str, Any]:
        """What a file pruned from this source records of how it was scored."""
        raise NotImplementedError

    def save(self, model: nn.Module, path: Path, provenance: dict[str, Any], specs: Mapping[str, TaskSpec]) -> Path:
        raise NotImplementedError

    def protect(self, out: Path) -> None:
        """Refuse an output that would overwrite the source's own files."""

    def base_bytes(self, base: nn.Module) -> int:
        """Size of the base model's file."""
        raise NotImplementedError

    def base_file(self, folder: Path) -> Path:
        """The base as a taskcut model file (the dense model a fleet benches against); written into
        `folder` when the source is not one."""
        raise NotImplementedError

    def dense_bytes(self, base: nn.Module, selected: nn.Module, tasks: list[str]) -> int:
        """File size of the selected model saved dense: the yardstick for the compact file."""
        with tempfile.TemporaryDirectory() as tmp:
            return self.save(selected, Path(tmp) / "dense.safetensors", {}, self.specs(selected, tasks)).stat().st_size


class FileSource(Source):
    """A taskcut model file (the zoo's SceneNet) and a `KIND:PATH` data set."""

    REASONS = {"--config": "with a model file (its spec names the model)"}

    def __init__(self, path: Path, data: str | None) -> None:
        from ..models.io import zoo_spec

        self.name = self.path = Path(path)
        self.spec = zoo_spec(self.path)
        self.data = data
        self._train: Any = None

    def _data(self) -> str:
        if self.data is None:
            raise TaskcutError("give --data KIND:PATH (or --config own.yaml naming your data's factory)")
        return self.data

    def train_set(self, specs: Mapping[str, TaskSpec]) -> Any:
        from ..data.dataset import open_for_tasks

        if self._train is None:
            self._train = open_for_tasks(self._data(), "train", specs)
        return self._train

    def task_names(self) -> list[str]:
        return list(self.spec["model"]["tasks"])

    def identity(self) -> str:
        from ..fileio import file_sha256

        return file_sha256(self.path)

    def open(self, device: str) -> nn.Module:
        from ..models import load

        return load(self.path, device)

    def select(self, base: nn.Module, tasks: list[str], device: str) -> nn.Module:
        return select(base, tasks)

    def specs(self, model: nn.Module, tasks: list[str]) -> dict[str, TaskSpec]:
        specs = model.config.task_specs()
        return {t: specs[t] for t in tasks}

    def scoring(self, given: ScoringSettings, recorded: Mapping[str, Any] | None,
                scores_file: Path | None) -> tuple[ScoringSettings, dict[str, Any]]:
        self._data()
        batches, batch_size = given.batches, given.batch_size
        if recorded is not None:
            if "data" not in recorded:
                raise TaskcutError(f"{scores_file} scores an own model, not a model file: score this one with "
                                   f"taskcut score {self.path} --data KIND:PATH")
            for option, value, key in (("--batches", batches, "batches"), ("--batch-size", batch_size, "batch_size")):
                if value is not None and value != recorded.get(key):
                    raise TaskcutError(f"{option} {value}: {scores_file} was scored with {recorded.get(key)}; leave "
                                       "it out with --scores (the file's settings are used)")
            batches, batch_size = recorded.get("batches"), recorded.get("batch_size")
        scoring = ScoringSettings(batches=DEFAULT_BATCHES if batches is None else batches,
                                  batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
        return scoring, {"data": self.data, "batches": scoring.batches, "batch_size": scoring.batch_size}

    def check_scoring(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings) -> dict[str, TaskSpec]:
        from ..data.dataset import with_class_weights

        dataset = self.train_set(specs)
        assert scoring.batches is not None and scoring.batch_size is not None
        wanted = scoring.batches * scoring.batch_size
        if wanted > len(dataset):
            raise TaskcutError(f"asked for {scoring.batches} batches of {scoring.batch_size} ({wanted} images), "
                               f"but the train split holds {len(dataset)}")
        return with_class_weights(specs, dataset)

    def scoring_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, rank: int, size: int,
                        device: str) -> tuple[Iterable[Mapping[str, torch.Tensor]], int]:
        dataset, n = self.train_set(specs), scoring.batch_size
        assert scoring.batches is not None and n is not None
        mine = range(rank, scoring.batches, size)  # whole batches, the same ones whatever the process count
        return (dataset.batch(torch.arange(i * n, (i + 1) * n)) for i in mine), len(mine)

    def example(self, specs: Mapping[str, TaskSpec], device: str, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is not None:
            return torch.rand(1, 3, *size).to(device)
        return self.train_set(specs).batch(torch.tensor([0]))["image"].to(device)

    def provenance(self) -> dict[str, Any]:
        from ..fileio import file_sha256

        return {"taskcut": __version__, "base": self.spec.get("provenance", {}), "source": str(self.path),
                "source_sha256": file_sha256(self.path)}

    def scoring_provenance(self, scoring: ScoringSettings) -> dict[str, Any]:
        return {"score_batches": scoring.batches, "score_batch_size": scoring.batch_size, "data": self.data}

    def save(self, model: nn.Module, path: Path, provenance: dict[str, Any], specs: Mapping[str, TaskSpec]) -> Path:
        from ..models import save

        return save(model, path, provenance)

    def protect(self, out: Path) -> None:
        if Path(out).resolve() == self.path.resolve():
            raise TaskcutError(f"--out {out} would overwrite the input model")

    def base_bytes(self, base: nn.Module) -> int:
        return self.path.stat().st_size

    def base_file(self, folder: Path) -> Path:
        return self.path

    def dense_bytes(self, base: nn.Module, selected: nn.Module, tasks: list[str]) -> int:
        """Saved from a view that shares the base's modules (the trunk and the chosen heads): nothing
        is copied."""
        from ..models import save
        from ..models.multitask import MultiTaskModel

        config = base.config.model_copy(update={"tasks": {t: base.config.tasks[t] for t in tasks}}, deep=True)
        view = MultiTaskModel(base.trunk, {t: base.heads[t] for t in tasks}, config)
        with tempfile.TemporaryDirectory() as tmp:
            return save(view, Path(tmp) / "dense.safetensors").stat().st_size


class YamlSource(Source):
    """An own model's YAML: its factory and weights, its tasks, its data's train/val/test splits."""

    REASONS = {"--data": "with an own model's --config: its YAML names the data",
               "the model file": "with an own model's --config: its YAML names the model",
               "--preset": "with an own model's --config: its YAML is the config"}

    def __init__(self, path: Path) -> None:
        from ..experiments.own import load_own_config

        self.name = Path(path)
        self.cfg = load_own_config(self.name)
        self._example: torch.Tensor | None = None

    def task_names(self) -> list[str]:
        return list(self.cfg.specs)

    def identity(self) -> str:
        from ..experiments.scores import own_base_digest

        return own_base_digest(self.cfg)

    def open(self, device: str) -> nn.Module:
        return self.cfg.build().to(device)

    def _first(self) -> torch.Tensor:
        if self._example is None:
            from ..experiments.own import first_input

            self._example = first_input(self.cfg, "train")
        return self._example

    def select(self, base: nn.Module, tasks: list[str], device: str) -> nn.Module:
        from ..api import Batches, check_model

        first = Batches(self.cfg.split("train"), self.cfg.transform(), device, "train batches").first()
        check_model(base, self.cfg.specs, first, tasks)
        self._example = first["image"]
        return select(base, tasks, first["image"])

    def specs(self, model: nn.Module, tasks: list[str]) -> dict[str, TaskSpec]:
        return {t: self.cfg.specs[t] for t in tasks}

    def scoring(self, given: ScoringSettings, recorded: Mapping[str, Any] | None,
                scores_file: Path | None) -> tuple[ScoringSettings, dict[str, Any]]:
        batches, batch_size = given.batches, given.batch_size
        if recorded is not None:
            if recorded.get("config") != "own":
                raise TaskcutError(f"{scores_file} scores a model file, not an own model: score this one with "
                                   f"taskcut score --config {self.name}")
            for option, value, key in (("--batches", batches, "batches"), ("--batch-size", batch_size, "batch_size")):
                if value is not None and value != recorded.get(key):
                    raise TaskcutError(f"{option} {value}: {scores_file} was scored with {recorded.get(key)}; leave "
                                       "it out with --scores (the file's settings are used)")
            batches, batch_size = recorded.get("batches"), recorded.get("batch_size")
        # the data factory makes the batches; a batch size given re-batches them (and is recorded)
        scoring = ScoringSettings(batches=DEFAULT_BATCHES if batches is None else batches, batch_size=batch_size)
        record: dict[str, Any] = {"config": "own", "batches": scoring.batches}
        if scoring.batch_size is not None:
            record["batch_size"] = scoring.batch_size
        return scoring, record

    def _train(self, device: str, batch_size: int | None) -> Iterable[Mapping[str, torch.Tensor]]:
        from ..api import Batches, Rebatched

        batches = Batches(self.cfg.split("train"), self.cfg.transform(), device, "train batches")
        return batches if batch_size is None else Rebatched(batches, batch_size)

    def scoring_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, rank: int, size: int,
                        device: str) -> tuple[Iterable[Mapping[str, torch.Tensor]], int]:
        assert scoring.batches is not None
        mine = range(rank, scoring.batches, size)
        return itertools.islice(self._train(device, scoring.batch_size), rank, scoring.batches, size), len(mine)

    def example(self, specs: Mapping[str, TaskSpec], device: str, size: tuple[int, int] | None = None) -> torch.Tensor:
        first = self._first()
        if size is None:
            return first.to(device)
        if first.dim() != 4:
            raise TaskcutError(f"--size sets the height and width of image inputs (N, C, H, W); this model's input "
                               f"has shape {tuple(first.shape)}")
        return torch.rand(1, first.shape[1], *size).to(device)

    def provenance(self) -> dict[str, Any]:
        return {"taskcut": __version__, "config": str(self.name), "weights": str(self.cfg.model.weights)}

    def scoring_provenance(self, scoring: ScoringSettings) -> dict[str, Any]:
        extra = {} if scoring.batch_size is None else {"score_batch_size": scoring.batch_size}
        return {"score_batches": scoring.batches, **extra}

    def save(self, model: nn.Module, path: Path, provenance: dict[str, Any], specs: Mapping[str, TaskSpec]) -> Path:
        from ..models import save

        return save(model, path, provenance, factory=self.cfg.model.factory, kwargs=self.cfg.model.kwargs,
                    tasks=dict(specs))

    def base_bytes(self, base: nn.Module) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            return self.save(base, Path(tmp) / "base.safetensors", {}, self.cfg.specs).stat().st_size

    def base_file(self, folder: Path) -> Path:
        return self.save(self.open("cpu"), Path(folder) / "dense.safetensors", {"fleet": "dense base"}, self.cfg.specs)


def open_source(model: Path | None = None, config: Path | None = None, data: str | None = None) -> Source:
    """The source a command names: a model file (with `data`), or an own model's YAML (`config`), never
    both. Options that do not apply to it are refused by the caller with `Source.refuse`."""
    from ..experiments.own import is_own_config

    if config is not None and is_own_config(config):
        source: Source = YamlSource(config)
        source.refuse({"the model file": model, "--data": data})
        return source
    if model is None:
        raise TaskcutError("give the model file (or --config own.yaml naming your model's factory)")
    return FileSource(model, data)


def tasks_of(source: Source, wanted: list[str]) -> list[str]:
    """The chosen tasks in the model's order; an unknown one is a clear error."""
    return check_tasks(source.task_names(), wanted)
