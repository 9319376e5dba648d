"""Small multi-task models of three layouts, for tests that must not depend on the zoo."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UNetLike(nn.Module):
    """Encoder e1 -> e2; task `seg` decodes e2 with a skip connection from e1; `depth` uses e2 alone."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Conv2d(3, 8, 3, padding=1)
        self.e2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.seg_up = nn.Conv2d(16, 8, 1)
        self.seg_skip = nn.Conv2d(8, 8, 1)
        self.seg_out = nn.Conv2d(8, 4, 1)
        self.depth_out = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f1 = F.relu(self.e1(x))
        f2 = F.relu(self.e2(f1))
        up = F.interpolate(self.seg_up(f2), size=f1.shape[-2:], mode="nearest")
        seg = self.seg_out(F.relu(up + self.seg_skip(f1)))
        return {"seg": seg, "depth": self.depth_out(f2)}


class PartialNeck(nn.Module):
    """A trunk shared by all three tasks and a neck shared by `seg` and `normal` only."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.neck = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.seg = nn.Conv2d(8, 4, 1)
        self.normal = nn.Conv2d(8, 3, 1)
        self.depth = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 1))
        self.scale = nn.Parameter(torch.ones(1))  # used by depth through a get_attr

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        n = self.neck(f)
        return {"seg": self.seg(n), "normal": self.normal(n), "depth": self.depth(f) * self.scale}


class TupleOutput(PartialNeck):
    def forward(self, x: torch.Tensor):  # type: ignore[override]
        out = super().forward(x)
        return out["seg"], out["normal"], out["depth"]


class Untraceable(PartialNeck):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = x * 2
        return super().forward(x)


class SlicedHead(nn.Module):
    """One output conv whose channels the forward slices into tasks (detection/multi-label style)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                                   nn.ReLU())
        self.out = nn.Conv2d(32, 7, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.out(self.trunk(x))
        return {"seg": o[:, :6], "depth": o[:, 6:7]}
