"""MultiTaskModel: a shared trunk and one head per task, keyed by task name."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..settings import MAX_PARAMETERS, Strict
from ..tasks.dense import TaskSpec
from .aspp import ASPPHead
from .resnet import DeepLabResNet


class TaskConfig(Strict):
    kind: Literal["segmentation", "normal", "depth", "keypoint", "edge"]
    channels: int = Field(gt=0)
    loss_weight: float = Field(default=1.0, ge=0)


class ModelConfig(Strict):
    """Architecture of a SceneNet-family model; stored in every model file, so it rebuilds without code arguments."""

    arch: Literal["scenenet"] = "scenenet"
    depth: Literal[18, 34, 50] = 34
    width: float = Field(default=1.0, gt=0)
    head_hidden: int = Field(default=1024, gt=0)
    head_dilations: list[int] = Field(default_factory=lambda: [6, 12, 18, 24])
    dropout: float = Field(default=0.5, ge=0, lt=1)
    tasks: dict[str, TaskConfig]

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, v: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        if not v:
            raise ValueError("a model needs at least one task")
        return v

    def task_specs(self) -> dict[str, TaskSpec]:
        return {name: TaskSpec(name, t.kind, t.channels) for name, t in self.tasks.items()}

    @model_validator(mode="after")
    def _bounded(self) -> "ModelConfig":
        """Counted on the meta device before anything is allocated: a typo must not eat the memory."""
        parameters = layout(self)[0]
        if parameters > MAX_PARAMETERS:
            raise ValueError(f"this architecture has {parameters:,} parameters, more than the {MAX_PARAMETERS:,} "
                             "taskcut builds")
        return self


class MultiTaskModel(nn.Module):
    """`forward(image) -> {task: prediction}` at the trunk's feature resolution (1/8).

    The config it was built from travels with it (`.config`), so saving needs nothing else.
    """

    def __init__(self, trunk: nn.Module, heads: dict[str, nn.Module], config: ModelConfig) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)
        self.config = config

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:  # (no test on the input's rank here: torch.fx traces this forward)
            # channels-last convolutions train about 10% faster on CPU (synth-tiny fine-tuning, 2 threads); the
            # weights keep their layout, so files and optimiser states do not change form
            image = image.contiguous(memory_format=torch.channels_last)
        features = self.trunk(image)
        return {name: head(features) for name, head in self.heads.items()}


def build_model(config: ModelConfig) -> MultiTaskModel:
    """A SceneNet-family model from its config (fresh weights)."""
    trunk = DeepLabResNet(config.depth, config.width)
    heads = {
        name: ASPPHead(trunk.out_channels, config.head_hidden, task.channels, config.head_dilations, config.dropout)
        for name, task in config.tasks.items()
    }
    return MultiTaskModel(trunk, heads, config)


#: In-place initialisers a module's constructor calls; on meta tensors they only cost time.
_INITIALISERS = frozenset({"normal_", "uniform_", "fill_", "zero_", "erfinv_", "clamp_", "mul_", "add_",
                           "copy_", "bernoulli_", "exponential_", "random_"})


class _SkipMetaInit(TorchFunctionMode):
    """Initialisers on meta tensors return at once. A torch function mode: per thread, so other
    threads building real models are untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if args and isinstance(args[0], torch.Tensor) and args[0].is_meta and \
                getattr(func, "__name__", "") in _INITIALISERS:
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build modules on the meta device without drawing initial weights: for a model whose shapes are
    all that is read (a file's expected layout) or whose weights a file replaces. Drawing on meta
    tensors goes through PyTorch's Python reference ops, about a millisecond a layer, and a fleet
    builds such models several times per device."""
    with torch.device("meta"), _SkipMetaInit():
        yield


_LAYOUTS: dict[str, tuple[int, dict[str, tuple[int, ...]]]] = {}


def layout(config: ModelConfig) -> tuple[int, dict[str, tuple[int, ...]]]:
    """The parameter count and every state tensor's shape of the model `config` builds, built once per
    config on the meta device (a fleet asks for them several times per device: files are checked
    against them, and structured pruning's changes are recorded as the shapes that differ)."""
    key = config.model_dump_json()
    hit = _LAYOUTS.get(key)
    if hit is None:
        # put together from its parts, each built once (a fleet's devices select other heads of one trunk)
        trunk, out_channels = _part(("trunk", config.depth, config.width),
                                    lambda: DeepLabResNet(config.depth, config.width))
        count, shapes = trunk[0], {f"trunk.{k}": v for k, v in trunk[1].items()}
        for name, task in config.tasks.items():
            head, _ = _part(("head", out_channels, config.head_hidden, task.channels, tuple(config.head_dilations),
                             config.dropout),
                            lambda: ASPPHead(out_channels, config.head_hidden, task.channels, config.head_dilations,
                                             config.dropout))
            count += head[0]
            shapes.update({f"heads.{name}.{k}": v for k, v in head[1].items()})
        hit = (count, shapes)
        if len(_LAYOUTS) >= 16:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
        _LAYOUTS[key] = hit
    return hit


_PARTS: dict[tuple, tuple[tuple[int, dict[str, tuple[int, ...]]], int]] = {}


def _part(key: tuple, build: Callable[[], nn.Module]) -> tuple[tuple[int, dict[str, tuple[int, ...]]], int]:
    """A trunk's or a head's parameter count and tensor shapes (and a trunk's output channels), built once
    on the meta device."""
    hit = _PARTS.get(key)
    if hit is None:
        with shapes_only():
            module = build()
        hit = ((sum(p.numel() for p in module.parameters()), {k: tuple(v.shape) for k, v in module.state_dict().items()}),
               int(getattr(module, "out_channels", 0)))
        if len(_PARTS) >= 64:
            _PARTS.pop(next(iter(_PARTS)))
        _PARTS[key] = hit
    return hit


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
