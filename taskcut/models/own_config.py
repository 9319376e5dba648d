"""Own models from the command line: a YAML file names the user's factories, tasks and data.

```yaml
model:
  factory: mypkg.models:build        # called with kwargs; returns the nn.Module
  kwargs: {width: 64}
  weights: base.safetensors          # optional: a safetensors state_dict or a taskcut model file
tasks:                               # every output of the model, by name
  seg: {kind: segmentation, classes: 19}
  depth: {kind: depth}
  scene: {kind: classification, classes: 10}
  boxes: {loss: "mypkg.losses:box_loss", metrics: {ap: ["mypkg.metrics:ap", higher]}}
data:
  factory: mypkg.data:splits         # returns {"train": batches, "val": batches, "test": batches}
  kwargs: {root: /data/mine}
  transform: mypkg.data:to_dict      # optional: turns one of your batches into {"image": ..., task: ...}
```

Importing a factory runs the user's code (as importing their package would); weights are
read from safetensors, never unpickled.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..settings import Strict, safe_yaml
from ..errors import TaskcutError
from ..models.own import build_from_factory, import_callable
from ..models.record import TaskModel
from ..tasks import Task, TaskSpec
from ..tasks.kinds import kind_of, load_kind


class OwnModel(Strict):
    factory: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None


class OwnTask(Strict):
    #: A registered kind (`taskcut.tasks.kinds`): the built-in ones or a user's.
    kind: str | None = None
    classes: int | None = Field(default=None, ge=2)
    labels: int | None = Field(default=None, ge=1)
    outputs: int = Field(default=1, ge=1)
    #: The output channels of a registered kind that takes them (a user's kind).
    channels: int | None = Field(default=None, ge=0, le=1_000_000)
    regression_loss: Literal["l1", "mse"] = "l1"
    ignore_index: int | None = None
    loss: str | None = None
    metrics: dict[str, tuple[str, Literal["higher", "lower"]]] = Field(default_factory=dict)
    loss_weight: float = Field(default=1.0, ge=0)


class OwnData(Strict):
    factory: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    transform: str | None = None


class OwnConfig(Strict):
    """An own model, its tasks and its data, from YAML (`load_own_config`)."""

    model: OwnModel
    tasks: dict[str, OwnTask]
    data: OwnData
    finetune: dict[str, Any] = Field(default_factory=dict)
    path: Path | None = None

    @cached_property
    def specs(self) -> dict[str, TaskSpec]:
        return {name: task_spec(name, t) for name, t in self.tasks.items()}

    def weights(self) -> dict[str, float]:
        return {name: t.loss_weight for name, t in self.tasks.items()}

    def references(self) -> list[str]:
        """The code this YAML names (factories, transform, task functions): what passing it trusts."""
        refs = [self.model.factory, self.data.factory] + ([self.data.transform] if self.data.transform else [])
        for task in self.tasks.values():
            refs += ([task.loss] if task.loss else []) + [fn for fn, _ in task.metrics.values()]
            refs += [task.kind] if task.kind and ":" in task.kind else []
        return refs

    def build(self) -> nn.Module:
        """The base model: the factory's module with the configured weights loaded."""
        model = build_from_factory(self.model.factory, self.model.kwargs)
        if self.model.weights is not None:
            load_weights(model, self._resolve(self.model.weights))
        return model.eval()

    def splits(self) -> dict[str, Iterable[Any]]:
        splits = build_data(self.data)
        if not isinstance(splits, dict) or "train" not in splits:
            raise TaskcutError(f"data factory {self.data.factory!r} must return a dict with 'train' (and 'val', "
                               f"'test') batches, got {type(splits).__name__}")
        return splits

    def split(self, name: str) -> Iterable[Any]:
        splits = self.splits()
        if name not in splits:
            raise TaskcutError(f"data factory {self.data.factory!r} has no {name!r} split; it has {sorted(splits)}")
        return splits[name]

    def transform(self):
        return import_callable(self.data.transform, "data transform") if self.data.transform else None

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() or self.path is None else self.path.parent / path


def task_spec(name: str, t: OwnTask) -> TaskSpec:
    """A `Task` from its YAML entry; a task with neither a kind nor a loss is a clear error."""
    kind = t.kind or ("custom" if t.loss else None)
    if kind is not None and ":" in kind:  # a user's kind by reference: the YAML names it, so it is trusted
        try:
            kind = load_kind(kind).name
        except ValueError as exc:
            raise TaskcutError(f"task {name!r}: {exc}") from exc
    if kind is None:
        raise TaskcutError(f"task {name!r} has no kind and no loss: give kind: (segmentation, depth, classification, "
                           "...) or loss: 'package.module:function'")
    try:
        if kind == "custom":
            if not t.loss:
                raise TaskcutError(f"task {name!r} is custom but has no loss: 'package.module:function'")
            spec = Task.custom(t.loss, {m: (ref, d) for m, (ref, d) in t.metrics.items()})
        else:
            fields = kind_of(kind).from_yaml(name, t.model_dump())
            spec = Task("", kind, **fields)
    except (ValueError, ImportError, TypeError) as exc:  # TypeError: a kind's from_yaml giving unknown fields
        if isinstance(exc, ValueError) and str(exc).startswith(f"task {name!r}"):
            raise TaskcutError(str(exc)) from exc
        raise TaskcutError(f"task {name!r}: {exc}") from exc
    return spec.named(name)


def build_data(data: OwnData) -> Any:
    factory = import_callable(data.factory, "data factory")
    try:
        return factory(**data.kwargs)
    except Exception as exc:
        raise TaskcutError(f"data factory {data.factory!r} failed: {type(exc).__name__}: {exc}") from exc


def load_weights(model: nn.Module, path: Path) -> None:
    """Pre-trained weights into the factory's model: a taskcut file's or a plain safetensors state_dict."""
    if not path.is_file():
        raise TaskcutError(f"weights file {path} does not exist")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TaskcutError(f"weights {path} are not a readable .safetensors file ({exc})") from exc
    state = model.state_dict()
    missing, unexpected = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    if missing or unexpected:
        raise TaskcutError(f"weights {path} do not fit the factory's model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")
    for key, value in tensors.items():
        if value.shape != state[key].shape:
            raise TaskcutError(f"weights {path}: {key} has shape {tuple(value.shape)}, the model {tuple(state[key].shape)}")
    model.load_state_dict(tensors)


def is_own_config(path: Path | None) -> bool:
    """Whether a YAML file describes an own model (a `model.factory`), not a zoo preset."""
    if path is None or not Path(path).is_file():
        return False
    try:
        data = safe_yaml(Path(path).read_text(), str(path))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and "factory" in data["model"]


def load_own_config(path: Path) -> OwnConfig:
    path = Path(path)
    try:
        data = safe_yaml(path.read_text(), f"config file {path}")
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise TaskcutError(f"config file {path} cannot be read as YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise TaskcutError(f"config file {path} must hold a mapping at its top level")
    try:
        return OwnConfig.model_validate({**data, "path": path})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise TaskcutError(f"invalid config {path} at {where}: {err['msg']}") from None


def first_input(cfg: OwnConfig, split: str = "test") -> Any:
    """One batch of model inputs from the data (the example exports and structure checks run on)."""
    from ..api import Batches

    return Batches(cfg.split(split), cfg.transform(), what=f"{split} batches").first()["image"]


def open_own_file(model_file: Path, cfg: OwnConfig) -> TaskModel:
    """A model file made from the own model `cfg` describes, as a record whose tasks are the YAML's
    (those the model computes; one it computes that the YAML does not declare is refused)."""
    from ..cut.decompose import task_outputs
    from ..models import open_model
    import torch

    record = open_model(model_file, trust=cfg.references())  # the YAML the user passed names this code
    model = record.model
    with torch.no_grad():
        names = list(task_outputs(model(first_input(cfg))))
    unknown = [t for t in names if t not in cfg.specs]
    if unknown:
        raise TaskcutError(f"{model_file} computes task(s) {unknown} that {cfg.path} does not declare")
    return record.replace(tasks={t: cfg.specs[t] for t in names})
