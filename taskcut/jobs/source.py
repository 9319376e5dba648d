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
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from .. import __version__
from ..config import DistillConfig, TrainConfig
from ..cut.select import check_tasks, select
from ..errors import TaskcutError
from ..models.record import TaskModel
from ..tasks import TaskSpec
from .settings import ExportSettings, FinetuneSettings, ScoringSettings

#: Scoring batches, and images per batch of a data set, when neither an option nor a scores file says.
DEFAULT_BATCHES, DEFAULT_BATCH_SIZE = 50, 8
#: Images per fine-tuning step on a data set when not given.
FINETUNE_BATCH_SIZE = 32


class Source:
    """A base model, its tasks and its data splits."""

    #: What messages call it: the model file or the YAML.
    name: Path
    #: What a refused option is told: why it cannot apply to this source.
    REASONS: dict[str, str] = {}
    #: Images per scoring batch and per fine-tuning step when not given (None: the data's own batches).
    SCORING_BATCH_SIZE: int | None = None
    FINETUNE_BATCH_SIZE: int | None = None

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

    def record(self) -> dict[str, Any]:
        """What a results folder records of the source (to refuse resuming with another one)."""
        raise NotImplementedError

    def declared_specs(self, tasks: list[str]) -> dict[str, TaskSpec]:
        """The specs of `tasks` as the source declares them, without building the model."""
        raise NotImplementedError

    def open(self, device: str, fresh: bool = False) -> nn.Module:
        """The base model on `device`. Kept for the next call while the source is unchanged (a fleet prunes
        every device from it): callers must not change it — `select` copies it — or must ask for a
        `fresh` one (scoring writes gradients into it)."""
        key = (str(device), self._version())
        if fresh:
            return self._build(device)
        if getattr(self, "_opened", None) is None or self._opened[0] != key:
            self._opened = (key, self._build(device))
        return self._opened[1]

    def _build(self, device: str) -> nn.Module:
        raise NotImplementedError

    def _version(self) -> object:
        """What changes when the base changes (its file's time and size)."""
        return None

    def select(self, base: nn.Module, tasks: list[str], device: str) -> TaskModel:
        """A copy of the base holding `tasks` only (checked to run on the data), as a record with the
        tasks' specs and how they were selected (what `save` needs)."""
        raise NotImplementedError

    def specs(self, model: nn.Module, tasks: list[str]) -> dict[str, TaskSpec]:
        """The task specs of `tasks` (as the model holds them)."""
        raise NotImplementedError

    def scoring(self, given: ScoringSettings, recorded: Mapping[str, Any] | None,
                scores_file: Path | None) -> tuple[ScoringSettings, dict[str, Any]]:
        """The scoring settings to use (given, else a scores file's, else the defaults) and what a
        scores file records of them. A setting given that differs from the file's is refused."""
        self.check_data()
        batches, batch_size = given.batches, given.batch_size
        if recorded is not None:
            self.check_scores_file(recorded, scores_file)
            for option, value, key in (("--batches", batches, "batches"), ("--batch-size", batch_size, "batch_size")):
                if value is not None and value != recorded.get(key):
                    raise TaskcutError(f"{option} {value}: {scores_file} was scored with {recorded.get(key)}; leave "
                                       "it out with --scores (the file's settings are used)")
            batches, batch_size = recorded.get("batches"), recorded.get("batch_size")
        scoring = ScoringSettings(batches=DEFAULT_BATCHES if batches is None else batches,
                                  batch_size=self.SCORING_BATCH_SIZE if batch_size is None else batch_size)
        return scoring, self.scoring_record(scoring)

    def check_data(self) -> None:
        """Refuse before any work when the source has no data to score on."""

    def check_scores_file(self, recorded: Mapping[str, Any], scores_file: Path | None) -> None:
        """Refuse a scores file written for the other kind of source."""

    def scoring_record(self, scoring: ScoringSettings) -> dict[str, Any]:
        """What a scores file records of the scoring settings (and of the data)."""
        raise NotImplementedError

    def check_scoring(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings) -> dict[str, TaskSpec]:
        """Check the train split holds the batches asked for, before any work; the specs to score with."""
        return dict(specs)

    def scoring_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, rank: int, size: int,
                        device: str) -> tuple[Iterable[Mapping[str, torch.Tensor]], int]:
        """This process's share of the scoring batches (every `size`-th from `rank`), and how many."""
        raise NotImplementedError

    def sampled_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, seed: int,
                        device: str) -> Iterable[Mapping[str, torch.Tensor]]:
        """The scoring batches of a comparison's cell with `seed`."""
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

    def save(self, model: TaskModel, path: Path, provenance: dict[str, Any]) -> Path:
        """Write a model made from this source (a record from `select` or `open_model`) as a model file."""
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

    def dense_bytes_later(self, base: nn.Module, selected: TaskModel, tasks: list[str]) -> Callable[[], int]:
        """File size of the selected model saved dense (the yardstick for the compact file), as a function
        to call when the figure is wanted; `selected` is cut after this returns. Measured now by default."""
        with tempfile.TemporaryDirectory() as tmp:
            size = self.save(selected, Path(tmp) / "dense.safetensors", {}).stat().st_size
        return lambda: size

    # -- the jobs on a model file made from this source (finetune, evaluate, export) ------------------

    def open_model(self, path: Path, device: str) -> tuple[TaskModel, dict[str, Any]]:
        """A model file made from this source: the record (the model on `device`, its tasks, how it was
        made), and the file's spec."""
        raise NotImplementedError

    def train_config(self, settings: FinetuneSettings) -> TrainConfig:
        """The fine-tuning schedule `fit` follows."""
        raise NotImplementedError

    def fit_data(self, model: nn.Module, specs: Mapping[str, TaskSpec], settings: FinetuneSettings,
                 device: str) -> tuple[Any, Any]:
        """The train stream and the validation data (None: no validation split) for fine-tuning."""
        raise NotImplementedError

    def teacher(self, spec: Mapping[str, Any], specs: Mapping[str, TaskSpec], distill: DistillConfig,
                path: Path | None, device: str) -> Any:
        """The dense model restricted to `specs`, frozen, as a compact model's teacher (`path`, or the
        source's own dense model)."""
        raise NotImplementedError

    def loss_weights(self, model: nn.Module, specs: Mapping[str, TaskSpec]) -> dict[str, float]:
        raise NotImplementedError

    def finetune_record(self, cfg: TrainConfig, settings: FinetuneSettings, best_step: int,
                        val: Any) -> dict[str, Any]:
        """What a fine-tuned file records of its schedule: what `control` repeats."""
        raise NotImplementedError

    def split_data(self, specs: Mapping[str, TaskSpec], split: str, device: str) -> Any:
        """Every batch of `split`, for metrics."""
        raise NotImplementedError

    def data_record(self) -> dict[str, Any]:
        """What a report records of the data."""
        return {}

    def metrics(self, model: nn.Module, specs: Mapping[str, TaskSpec], data: Any, convention: str,
                device: str) -> dict[str, dict[str, float]]:
        """Metrics of `model` on every batch of `data` (in eval mode, restored afterwards)."""
        from ..cut.decompose import evaluating, task_outputs
        from ..train.evaluate import evaluate_predictor

        with evaluating(model):
            return evaluate_predictor(lambda b: task_outputs(model(b["image"])), data, specs, device=device,
                                      convention=convention)

    def baseline(self, path: Path, tasks: list[str], device: str) -> nn.Module:
        """The dense model delta_T is measured against."""
        raise NotImplementedError

    def control(self, baseline: Path, tasks: list[str], spec: Mapping[str, Any], device: str,
                show_progress: bool) -> tuple[nn.Module, Path, dict[str, Any]] | None:
        """The dense control of a fine-tuned model: `baseline` restricted to `tasks` and fine-tuned
        exactly as the model was (its provenance's schedule), trained once and cached; with the file and
        the schedule. None where the model was not fine-tuned."""
        raise NotImplementedError

    def control_of(self, tasks: list[str], schedule: FinetuneSettings, device: str,
                   show_progress: bool) -> tuple[nn.Module, Path]:
        """The base restricted to `tasks` and fine-tuned with `schedule` (cached): a comparison's control."""
        raise NotImplementedError

    def samples(self, specs: Mapping[str, TaskSpec]) -> Any:
        """The test split as a data set to draw sample predictions from, or None where it is not one."""
        return None

    def no_control(self, baseline: Path) -> str:
        """Why there is no control for a model (said when one was asked for)."""
        return "the model was not fine-tuned (its provenance has no schedule to repeat on the dense model)"

    def check_control(self, baseline: Path | None, control: bool | None) -> None:
        """Refuse, before any work, a control asked for that this source cannot make."""
        if control and baseline is None:
            raise TaskcutError("--control needs --baseline: the control is the baseline fine-tuned like this model")

    def check_finetune(self, settings: FinetuneSettings) -> None:
        """Refuse, before any work, fine-tuning settings this source cannot apply."""

    def check_export(self, settings: ExportSettings) -> None:
        """Export settings this source cannot apply, refused before any work."""

    def calibration(self, specs: Mapping[str, TaskSpec]) -> torch.Tensor:
        """Images of the train split that int8 is calibrated on (the same an int8 export uses)."""
        raise NotImplementedError

    def export_inputs(self, path: Path, specs: Mapping[str, TaskSpec],
                      settings: ExportSettings) -> tuple[torch.Tensor, torch.Tensor | None, Any, dict[str, Any]]:
        """Sample inputs the exported file is checked on, int8 calibration images (None for fp32), the
        batches it is evaluated on (None without data), and what the record says of them."""
        raise NotImplementedError


class FileSource(Source):
    """A taskcut model file (the zoo's SceneNet) and a `KIND:PATH` data set."""

    REASONS = {"--config": "with a model file (its spec names the model)"}
    SCORING_BATCH_SIZE, FINETUNE_BATCH_SIZE = DEFAULT_BATCH_SIZE, FINETUNE_BATCH_SIZE

    def __init__(self, path: Path, data: str | None) -> None:
        from ..models.io import zoo_spec

        self.name = self.path = Path(path)
        self.spec = zoo_spec(self.path)
        self.data = data
        self._train: tuple[tuple, Any] | None = None

    def _data(self) -> str:
        if self.data is None:
            raise TaskcutError("give --data KIND:PATH (or --config own.yaml naming your data's factory)")
        return self.data

    def train_set(self, specs: Mapping[str, TaskSpec]) -> Any:
        """The train split opened for `specs` (kept for the next call with the same tasks: a fleet's devices
        with other tasks get their own, as the class count and the targets checked depend on them)."""
        from ..data.dataset import open_for_tasks

        key = tuple((name, spec.kind, spec.channels) for name, spec in specs.items())
        if self._train is None or self._train[0] != key:
            self._train = (key, open_for_tasks(self._data(), "train", specs))
        return self._train[1]

    def task_names(self) -> list[str]:
        return list(self.spec["model"]["tasks"])

    def identity(self) -> str:
        from ..fileio import file_sha256

        version = self._version()
        if getattr(self, "_identity", None) is None or self._identity[0] != version:
            self._identity = (version, file_sha256(self.path))
        return self._identity[1]

    def _version(self) -> object:
        stat = self.path.stat()
        return (stat.st_mtime_ns, stat.st_size)

    def record(self) -> dict[str, Any]:
        return {"base": str(self.path), "base_sha256": self.identity(), "data": self.data}

    def declared_specs(self, tasks: list[str]) -> dict[str, TaskSpec]:
        declared = self.spec["model"]["tasks"]
        return {t: TaskSpec.from_dict(t, declared[t]) for t in tasks}

    def sampled_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, seed: int,
                        device: str) -> Iterable[Mapping[str, torch.Tensor]]:
        from ..data.dataset import iterate_batches

        assert scoring.batch_size is not None
        generator = torch.Generator().manual_seed(seed)
        return itertools.islice(iterate_batches(self.train_set(specs), scoring.batch_size, shuffle=True,
                                                generator=generator), scoring.batches)

    def control_of(self, tasks: list[str], schedule: FinetuneSettings, device: str,
                   show_progress: bool) -> tuple[nn.Module, Path]:
        from ..train.runs import dense_control
        from ..models import load

        path = dense_control(self.path, tasks, self.train_config(schedule), self._data(), None, device, show_progress)
        return load(path, device), path

    def samples(self, specs: Mapping[str, TaskSpec]) -> Any:
        return self.split_data(specs, "test", "cpu")

    def _build(self, device: str) -> nn.Module:
        from ..models import load

        return load(self.path, device)

    def select(self, base: nn.Module, tasks: list[str], device: str) -> TaskModel:
        return select(base, tasks)

    def specs(self, model: nn.Module, tasks: list[str]) -> dict[str, TaskSpec]:
        specs = model.config.task_specs()
        return {t: specs[t] for t in tasks}

    def check_data(self) -> None:
        self._data()

    def check_scores_file(self, recorded: Mapping[str, Any], scores_file: Path | None) -> None:
        if "data" not in recorded:
            raise TaskcutError(f"{scores_file} scores an own model, not a model file: score this one with "
                               f"taskcut score {self.path} --data KIND:PATH")

    def scoring_record(self, scoring: ScoringSettings) -> dict[str, Any]:
        return {"data": self.data, "batches": scoring.batches, "batch_size": scoring.batch_size}

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
        return {"taskcut": __version__, "base": self.spec.get("provenance", {}), "source": str(self.path),
                "source_sha256": self.identity()}

    def scoring_provenance(self, scoring: ScoringSettings) -> dict[str, Any]:
        return {"score_batches": scoring.batches, "score_batch_size": scoring.batch_size, "data": self.data}

    def save(self, model: TaskModel, path: Path, provenance: dict[str, Any]) -> Path:
        from ..models import save

        return save(model, path, provenance)

    def protect(self, out: Path) -> None:
        if Path(out).resolve() == self.path.resolve():
            raise TaskcutError(f"--out {out} would overwrite the input model")

    def base_bytes(self, base: nn.Module) -> int:
        return self.path.stat().st_size

    def base_file(self, folder: Path) -> Path:
        return self.path

    def open_model(self, path: Path, device: str) -> tuple[TaskModel, dict[str, Any]]:
        from ..models import open_model, read_spec

        return open_model(path, device), read_spec(path)

    def train_config(self, settings: FinetuneSettings) -> TrainConfig:
        cfg = settings.schedule or TrainConfig(
            steps=settings.steps, batch_size=FINETUNE_BATCH_SIZE if settings.batch_size is None else settings.batch_size,
            lr=settings.lr, val_every=min(settings.val_every, settings.steps), seed=settings.seed)
        return cfg.model_copy(update={"distill": settings.distill}) if settings.distill is not None else cfg

    def fit_data(self, model: nn.Module, specs: Mapping[str, TaskSpec], settings: FinetuneSettings,
                 device: str) -> tuple[Any, Any]:
        from ..data.dataset import open_for_tasks

        crop = tuple(settings.crop) if settings.crop else None
        return tuple(open_for_tasks(self._data(), s, specs, crop) for s in ("train", "val"))  # type: ignore

    def teacher(self, spec: Mapping[str, Any], specs: Mapping[str, TaskSpec], distill: DistillConfig,
                path: Path | None, device: str) -> Any:
        from ..train.runs import dense_teacher

        return dense_teacher(spec, list(specs), distill, path, device)

    def loss_weights(self, model: nn.Module, specs: Mapping[str, TaskSpec]) -> dict[str, float]:
        return {name: t.loss_weight for name, t in model.config.tasks.items()}

    def finetune_record(self, cfg: TrainConfig, settings: FinetuneSettings, best_step: int,
                        val: Any) -> dict[str, Any]:
        from ..data.dataset import validation_source

        return {**cfg.model_dump(), "best_step": best_step, "data": self.data,
                "crop": list(settings.crop) if settings.crop else None, "validation": validation_source(val)}

    def split_data(self, specs: Mapping[str, TaskSpec], split: str, device: str) -> Any:
        from ..data.dataset import open_for_tasks

        return open_for_tasks(self._data(), split, specs)

    def data_record(self) -> dict[str, Any]:
        return {"data": self.data}

    def baseline(self, path: Path, tasks: list[str], device: str) -> nn.Module:
        from ..models import load

        base = load(path, device)
        missing = [t for t in tasks if t not in base.tasks]
        if missing:
            raise TaskcutError(f"baseline {path} has no task(s) {', '.join(missing)}")
        return select(base, tasks).model

    def control(self, baseline: Path, tasks: list[str], spec: Mapping[str, Any], device: str,
                show_progress: bool) -> tuple[nn.Module, Path, dict[str, Any]] | None:
        from ..train.runs import _finetune_schedule, dense_control
        from ..models import load

        schedule = _finetune_schedule(spec)
        if schedule is None:
            return None
        cfg, data, crop = schedule
        path = dense_control(baseline, tasks, cfg, data, crop, device, show_progress)
        return load(path, device), path, cfg.model_dump()

    def calibration(self, specs: Mapping[str, TaskSpec]) -> torch.Tensor:
        from ..deploy.export import training_images

        return training_images(self._data(), specs)

    def export_inputs(self, path: Path, specs: Mapping[str, TaskSpec],
                      settings: ExportSettings) -> tuple[torch.Tensor, torch.Tensor | None, Any, dict[str, Any]]:
        from ..data.dataset import open_for_tasks
        from ..deploy.export import model_data, sample_inputs, training_images
        from ..models import read_spec

        data = self.data or model_data(read_spec(path))
        if data is None:
            if settings.int8:
                raise TaskcutError(f"--int8 calibrates on training images: pass --data (no data recorded in {path})")
            return sample_inputs(settings.size or (64, 64)), None, None, {"data": None, "split": None}
        if settings.size is not None:
            raise TaskcutError(f"--size sets the sample inputs where there is no data; {path} is checked on "
                               f"{data}'s images: leave it out")
        samples = training_images(data, specs)
        evaluation = open_for_tasks(data, settings.split, specs)
        return samples[:4], samples if settings.int8 else None, evaluation, {"data": data, "split": settings.split}

    def dense_bytes_later(self, base: nn.Module, selected: TaskModel, tasks: list[str]) -> Callable[[], int]:
        """Saved, when asked for, from a view that shares the base's modules (the trunk and the chosen
        heads): nothing is copied, and nothing is written unless the figure is wanted."""
        from ..models import save
        from ..models.multitask import MultiTaskModel

        def size() -> int:
            config = base.config.model_copy(update={"tasks": {t: base.config.tasks[t] for t in tasks}}, deep=True)
            view = MultiTaskModel(base.trunk, {t: base.heads[t] for t in tasks}, config)
            with tempfile.TemporaryDirectory() as tmp:
                return save(view, Path(tmp) / "dense.safetensors").stat().st_size

        return size


class YamlSource(Source):
    """An own model's YAML: its factory and weights, its tasks, its data's train/val/test splits."""

    REASONS = {"--data": "with an own model's --config: its YAML names the data",
               "the model file": "with an own model's --config: its YAML names the model",
               "--preset": "with an own model's --config: its YAML is the config"}

    def __init__(self, path: Path) -> None:
        from ..models.own_config import load_own_config

        self.name = Path(path)
        self.cfg = load_own_config(self.name)
        self._example: torch.Tensor | None = None

    def task_names(self) -> list[str]:
        return list(self.cfg.specs)

    def _files(self) -> list[Path]:
        """The files the base comes from: the YAML and its weights."""
        return [self.name] + ([self.cfg._resolve(self.cfg.model.weights)] if self.cfg.model.weights else [])

    def _version(self) -> object:
        """The YAML's and the weights file's time and size: the base changes with either."""
        return tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in self._files())

    def protect(self, out: Path) -> None:
        if any(Path(out).resolve() == Path(f).resolve() for f in self._files()):
            raise TaskcutError(f"--out {out} would overwrite the own model's YAML or its weights")

    def identity(self) -> str:
        from ..cut.scores_file import own_base_digest

        return own_base_digest(self.cfg)

    def record(self) -> dict[str, Any]:
        return {"config": str(self.name), "base_digest": self.identity(), "data": self.cfg.data.model_dump(mode="json")}

    def declared_specs(self, tasks: list[str]) -> dict[str, TaskSpec]:
        return {t: self.cfg.specs[t] for t in tasks}

    def sampled_batches(self, specs: Mapping[str, TaskSpec], scoring: ScoringSettings, seed: int,
                        device: str) -> Iterable[Mapping[str, torch.Tensor]]:
        # the user's data factory decides the order: every method and seed scores the same batches
        return itertools.islice(self._train(device, scoring.batch_size), scoring.batches)

    def control_of(self, tasks: list[str], schedule: FinetuneSettings, device: str,
                   show_progress: bool) -> tuple[nn.Module, Path]:
        recipe = schedule.model_dump(include={"steps", "lr", "val_every", "seed", "distill", "batch_size"})
        model, path = self.dense_control(tasks, recipe, device, show_progress)
        return model.to(device), path

    def _build(self, device: str) -> nn.Module:
        return self.cfg.build().to(device)

    def _first(self) -> torch.Tensor:
        if self._example is None:
            from ..models.own_config import first_input

            self._example = first_input(self.cfg, "train")
        return self._example

    def select(self, base: nn.Module, tasks: list[str], device: str) -> TaskModel:
        from ..api import Batches, check_model

        first = Batches(self.cfg.split("train"), self.cfg.transform(), device, "train batches").first()
        check_model(base, self.cfg.specs, first, tasks)
        self._example = first["image"]
        return select(self._record(base), tasks, first["image"])

    def _record(self, model: nn.Module) -> TaskModel:
        """The base (or a model built as it) as a record: the YAML's factory and tasks."""
        return TaskModel(model, dict(self.cfg.specs), self.cfg.model.factory, dict(self.cfg.model.kwargs))

    def specs(self, model: nn.Module, tasks: list[str]) -> dict[str, TaskSpec]:
        return {t: self.cfg.specs[t] for t in tasks}

    def check_scores_file(self, recorded: Mapping[str, Any], scores_file: Path | None) -> None:
        if recorded.get("config") != "own":
            raise TaskcutError(f"{scores_file} scores a model file, not an own model: score this one with "
                               f"taskcut score --config {self.name}")

    def scoring_record(self, scoring: ScoringSettings) -> dict[str, Any]:
        # the data factory makes the batches; a batch size given re-batches them (and is recorded)
        record: dict[str, Any] = {"config": "own", "batches": scoring.batches}
        if scoring.batch_size is not None:
            record["batch_size"] = scoring.batch_size
        return record

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

    def save(self, model: TaskModel, path: Path, provenance: dict[str, Any]) -> Path:
        from ..models import save

        # the YAML names the factory: what the file records is the YAML's, whatever the record says
        return save(model, path, provenance, factory=self.cfg.model.factory, kwargs=self.cfg.model.kwargs)

    def base_bytes(self, base: nn.Module) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            return self.save(self._record(base), Path(tmp) / "base.safetensors", {}).stat().st_size

    def base_file(self, folder: Path) -> Path:
        return self.save(self._record(self.open("cpu")), Path(folder) / "dense.safetensors", {"fleet": "dense base"})

    def _batches(self, split: str, device: str | None = None, what: str = "batches") -> Any:
        from ..api import Batches

        return Batches(self.cfg.split(split), self.cfg.transform(), device or "cpu", f"{split} {what}")

    def open_model(self, path: Path, device: str) -> tuple[TaskModel, dict[str, Any]]:
        from ..models.own_config import open_own_file
        from ..models import read_spec

        record = open_own_file(path, self.cfg)
        return record.replace(model=record.model.to(device)), read_spec(path)

    def train_config(self, settings: FinetuneSettings) -> TrainConfig:
        # the data factory makes the batches (re-batched to `settings.batch_size` when given)
        return TrainConfig(steps=settings.steps, lr=settings.lr, val_every=min(settings.val_every, settings.steps),
                           seed=settings.seed, batch_size=1, distill=settings.distill)

    def fit_data(self, model: nn.Module, specs: Mapping[str, TaskSpec], settings: FinetuneSettings,
                 device: str) -> tuple[Any, Any]:
        from ..api import Batches, check_model
        from ..train.distributed import world
        from ..train.fit import IterableStream

        if world().size > 1:
            raise TaskcutError("torchrun shares a data set's batches between processes; an own model's data "
                               "factory is not split: fine-tune it in one process")
        train = self._train(device, settings.batch_size)
        if settings.batch_size is not None:
            train = Batches(train, None, device, "train batches")
        check_model(model, specs, train.first(), list(specs))
        splits = self.cfg.splits()
        val = self._batches("val", device, "validation batches") if "val" in splits else None
        return IterableStream(train), val

    def teacher(self, spec: Mapping[str, Any], specs: Mapping[str, TaskSpec], distill: DistillConfig,
                path: Path | None, device: str) -> Any:
        from ..models import load
        from ..train.distill import Teacher

        dense = load(path, trust=self.cfg.references()) if path is not None else self.cfg.build()
        return Teacher(dense.to(device), distill, dict(specs))

    def loss_weights(self, model: nn.Module, specs: Mapping[str, TaskSpec]) -> dict[str, float]:
        return {t: self.cfg.weights()[t] for t in specs}

    def finetune_record(self, cfg: TrainConfig, settings: FinetuneSettings, best_step: int,
                        val: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"steps": cfg.steps, "lr": cfg.lr, "val_every": settings.val_every,
                                  "distill": cfg.distill.model_dump() if cfg.distill else None,
                                  "validation": "val" if val is not None else "none"}
        if settings.batch_size is not None:
            record["batch_size"] = settings.batch_size
        if settings.seed:
            record["seed"] = settings.seed
        if settings.teacher is not None:
            record["teacher"] = str(settings.teacher)
        return record

    def split_data(self, specs: Mapping[str, TaskSpec], split: str, device: str) -> Any:
        return self._batches(split, device)

    def baseline(self, path: Path, tasks: list[str], device: str) -> nn.Module:
        from ..models import load

        return (self.cfg.build() if str(path) == "base" else load(path, trust=self.cfg.references())).to(device)

    def control(self, baseline: Path, tasks: list[str], spec: Mapping[str, Any], device: str,
                show_progress: bool) -> tuple[nn.Module, Path, dict[str, Any]] | None:
        schedule = spec.get("provenance", {}).get("finetune")
        if str(baseline) != "base" or not isinstance(schedule, dict):
            return None
        model, path = self.dense_control(tasks, schedule, device, show_progress)
        return model.to(device), path, schedule

    def dense_control(self, tasks: list[str], schedule: Mapping[str, Any], device: str = "cpu",
                      show_progress: bool = False) -> tuple[nn.Module, Path]:
        """The base restricted to `tasks` and fine-tuned exactly as a compact model was (`schedule`: steps,
        lr, val_every, distill, and seed and batch size where set; the same batches and selection on the
        validation split, through the same `fit` as `taskcut.jobs.finetune`), so a gain the control
        shows too is the extra training, not the pruning. Cached by (the base's factory, arguments and
        weights, the tasks, the schedule, the data)."""
        import hashlib
        import json

        from ..cache import cache_dir
        from ..models import load
        from ..train.fit import fit
        from .settings import make

        recipe = {k: schedule.get(k) for k in ("steps", "lr", "val_every", "distill")}
        for extra in ("seed", "batch_size"):  # set only when used: the keys of earlier controls stay theirs
            if schedule.get(extra):
                recipe[extra] = int(schedule[extra])
        key_data = {"base": self.identity(), "tasks": tasks, "finetune": recipe,
                    "data": self.cfg.data.model_dump(mode="json")}
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = cache_dir() / "controls" / f"own-control-{key}.safetensors"
        if path.is_file():
            return load(path, trust=self.cfg.references()), path
        settings = make(FinetuneSettings, **{k: v for k, v in recipe.items() if v is not None})
        selected = self.select(self.open(device), tasks, device)
        dense, specs = selected.model, selected.tasks
        cfg = self.train_config(settings)
        train, val = self.fit_data(dense, specs, settings, device)
        teacher = self.teacher({}, specs, cfg.distill, None, device) if cfg.distill is not None else None
        fit(dense, specs, self.loss_weights(dense, specs), cfg, train, val, device, show_progress, label="finetune",
            teacher=teacher)
        self.save(selected.replace(model=dense.cpu()), path, {"control": key_data})
        return dense, path

    def calibration(self, specs: Mapping[str, TaskSpec]) -> torch.Tensor:
        return self.calibration_images()

    def calibration_images(self) -> torch.Tensor:
        """The first images of the train split: int8 calibration."""
        from ..deploy.export import CALIBRATION_IMAGES

        taken, count = [], 0
        for batch in self._batches("train", what="calibration batches"):
            taken.append(batch["image"].cpu())
            count += len(taken[-1])
            if count >= CALIBRATION_IMAGES:
                break
        return torch.cat(taken)[:CALIBRATION_IMAGES]

    def bench_input(self, size: tuple[int, int] | None) -> torch.Tensor:
        """One input to time: the data's first, or a random one of `size` (height, width)."""
        return self.example({}, "cpu", size)[:1].cpu()

    def check_export(self, settings: ExportSettings) -> None:
        if settings.size is not None:
            raise TaskcutError("--size does not apply with an own model's --config: its data gives the input "
                               "size; leave it out")

    def no_control(self, baseline: Path) -> str:
        if str(baseline) != "base":
            return "needs --baseline base: the control is the YAML's base model fine-tuned like this one"
        return super().no_control(baseline)

    def check_control(self, baseline: Path | None, control: bool | None) -> None:
        super().check_control(baseline, control)
        if control and str(baseline) != "base":
            raise TaskcutError(f"--control {self.no_control(Path(str(baseline)))}")

    def check_finetune(self, settings: FinetuneSettings) -> None:
        for what, value in (("a preset's schedule", settings.schedule), ("a crop", settings.crop)):
            if value is not None:
                raise TaskcutError(f"{what} does not apply with an own model's --config: its data factory makes the "
                                   "batches; leave it out")

    def export_inputs(self, path: Path, specs: Mapping[str, TaskSpec],
                      settings: ExportSettings) -> tuple[torch.Tensor, torch.Tensor | None, Any, dict[str, Any]]:
        self.check_export(settings)
        samples = self._batches(settings.split).first()["image"].cpu()
        images = self.calibration_images() if settings.int8 else None
        return samples, images, self._batches(settings.split, what="evaluation batches"), \
            {"config": str(self.name), "split": settings.split}


def open_source(model: Path | None = None, config: Path | None = None, data: str | None = None) -> Source:
    """The source a command names: a model file (with `data`), or an own model's YAML (`config`), never
    both. Options that do not apply to it are refused by the caller with `Source.refuse`."""
    if config is not None:
        source: Source = YamlSource(_own_yaml(config))
        source.refuse({"the model file": model, "--data": data})
        return source
    if model is None:
        raise TaskcutError("give the model file (or --config own.yaml naming your model's factory)")
    return FileSource(model, data)


def source_of_file(model_file: Path, config: Path | None = None, data: str | None = None) -> Source:
    """The source of a model file made by taskcut (a compact or fine-tuned model): an own model's YAML
    (`config`) when given, else the file itself with its data (`data`)."""
    if config is not None:
        source: Source = YamlSource(_own_yaml(config))
        source.refuse({"--data": data})
        return source
    return FileSource(model_file, data)


def _own_yaml(config: Path) -> Path:
    """`config` when it is an own model's YAML; anything else is refused, never ignored."""
    from ..models.own_config import is_own_config

    if not Path(config).is_file():
        raise TaskcutError(f"config file {config} does not exist")
    if not is_own_config(config):
        raise TaskcutError(f"--config {config} is not an own model's YAML (no model: factory:); this command takes "
                           "one naming your model's factory, tasks and data")
    return Path(config)


def tasks_of(source: Source, wanted: list[str]) -> list[str]:
    """The chosen tasks in the model's order; an unknown one is a clear error."""
    return check_tasks(source.task_names(), wanted)
