"""Typed configuration: model, data and training settings, loaded from shipped presets or YAML.

A preset is a YAML file in `taskcut/presets/`; a user's YAML is merged over the preset it
names (`preset: synth-tiny`) or stands alone. Unknown keys are errors, so a typo cannot
silently fall back to a default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from .errors import TaskcutError
from .models.multitask import ModelConfig, TaskConfig
from .settings import (MAX_BATCH, MAX_IMAGE_SIDE, MAX_PARAMETERS, MAX_RUNS, MAX_THREADS, MAX_YAML_NODES, Strict,
                       safe_yaml)

__all__ = ["MAX_BATCH", "MAX_IMAGE_SIDE", "MAX_PARAMETERS", "MAX_RUNS", "MAX_THREADS", "MAX_YAML_NODES", "DataConfig",
           "DistillConfig", "ModelConfig", "RunConfig", "Strict", "TaskConfig", "load_config", "preset_names",
           "safe_yaml"]


class DataConfig(Strict):
    """Which data set; for `synth`, how to generate it when no `--data` path is given."""

    dataset: Literal["synth", "nyuv2", "cityscapes", "taskonomy"] = "synth"
    size: tuple[int, int] = (64, 64)
    train: int = Field(default=1000, ge=1)
    val: int = Field(default=100, ge=1)
    test: int = Field(default=200, ge=1)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    soft_width: float = Field(default=2.0, gt=0)
    keypoint_width: float = Field(default=4.0, gt=0)

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] <= 0 or v[1] <= 0:
            raise ValueError(f"image size must be positive, got {v[0]}x{v[1]}")
        if max(v) > MAX_IMAGE_SIDE:
            raise ValueError(f"image size {v[0]}x{v[1]} is over the maximum side of {MAX_IMAGE_SIDE}")
        return v


class DistillConfig(Strict):
    """Distillation from the dense model while fine-tuning (`taskcut.train.distill`): per task the
    loss is label loss + `weight` x distillation loss; `features` > 0 also matches trunk features."""

    weight: float = Field(default=1.0, gt=0)
    temperature: float = Field(default=1.0, gt=0)
    features: float = Field(default=0.0, ge=0)


class TrainConfig(Strict):
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    lr_decay_every: int = Field(default=0, ge=0)
    lr_decay_rate: float = Field(default=0.5, gt=0, le=1)
    val_every: int = Field(default=100, ge=1)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    #: Fine-tuning only: learn from the dense model too (None: from the labels alone).
    distill: DistillConfig | None = None

    def key(self) -> dict[str, Any]:
        """The schedule as cache keys see it: without distillation, exactly as before it existed."""
        return self.model_dump(exclude={"distill"} if self.distill is None else set())


class RunConfig(Strict):
    """Everything `taskcut train` needs."""

    name: str = "custom"
    description: str = ""
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    #: The schedule for fine-tuning a model pruned from this preset's base (`taskcut finetune --preset`).
    finetune: TrainConfig | None = None

    def loss_weights(self) -> dict[str, float]:
        return {name: t.loss_weight for name, t in self.model.tasks.items()}

    def key(self) -> dict[str, Any]:
        """The config as cache keys see it (JSON); settings left at "off" are absent, as before they existed,
        so models cached by earlier versions are still found."""
        dump = self.model_dump(mode="json")
        for section in ("train", "finetune"):
            if isinstance(dump.get(section), dict) and dump[section].get("distill") is None:
                dump[section].pop("distill", None)
        return dump


def preset_names() -> list[str]:
    folder = resources.files("taskcut") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _preset_dict(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise TaskcutError(f"unknown preset {name!r}; presets: {', '.join(names)}")
    text = (resources.files("taskcut") / "presets" / f"{name}.yaml").read_text()
    return safe_yaml(text, f"preset {name}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "tasks":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(preset: str | None = None, path: Path | None = None,
                overrides: dict[str, Any] | None = None) -> RunConfig:
    """A preset, a YAML file (optionally naming its own `preset:` base), or both, plus overrides."""
    data: dict[str, Any] = {}
    user: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise TaskcutError(f"config file {path} does not exist")
        try:
            user = safe_yaml(path.read_text(), f"config file {path}") or {}
        except yaml.YAMLError as exc:
            raise TaskcutError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        except UnicodeDecodeError:
            raise TaskcutError(f"config file {path} is not UTF-8 text") from None
        if not isinstance(user, dict):
            raise TaskcutError(f"config file {path} must hold a mapping at its top level")
        named = user.pop("preset", None)
        if named is not None and not isinstance(named, str):
            raise TaskcutError(f"config file {path}: preset must be a preset's name, got a {type(named).__name__}")
        preset = named or preset
    if preset is None and path is None:
        raise TaskcutError("give --preset NAME or --config FILE.yaml")
    if preset is not None:
        data = _preset_dict(preset)
        data.setdefault("name", preset)
    data = _merge(data, user)
    data = _merge(data, overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise TaskcutError(f"invalid config at {where}: {err['msg']}") from exc
