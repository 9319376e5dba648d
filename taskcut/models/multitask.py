"""MultiTaskModel: a shared trunk and one head per task, keyed by task name."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .aspp import ASPPHead
from .resnet import DeepLabResNet


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
