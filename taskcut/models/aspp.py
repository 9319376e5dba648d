"""The SceneNet task head: DeepLab-v2's ASPP classifier, one per task.

Four parallel branches (3x3 conv at one dilation, ReLU, dropout, 1x1 conv, ReLU, dropout,
1x1 conv to the task's channels) whose outputs are summed. The paper's dilations
(6, 12, 18, 24) suit ~41x41 feature maps; small presets pass smaller ones, because a tap
that only ever lands on padding learns nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ASPPBranch(nn.Module):
    def __init__(self, in_channels: int, hidden: int, out_channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.conv3 = nn.Conv2d(hidden, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.conv1(x)))
        x = self.drop(self.relu(self.conv2(x)))
        return self.conv3(x)


class ASPPHead(nn.Module):
    def __init__(self, in_channels: int, hidden: int, out_channels: int,
                 dilations: Sequence[int] = (6, 12, 18, 24), dropout: float = 0.5) -> None:
        super().__init__()
        if not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"head dilations must be positive integers, got {list(dilations)}")
        self.branches = nn.ModuleList(ASPPBranch(in_channels, hidden, out_channels, d, dropout) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out
