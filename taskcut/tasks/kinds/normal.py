"""Per-pixel surface normals: cosine loss; angle errors."""

from __future__ import annotations

import numpy as np
import torch

from ..accumulate import Metric, MetricAccumulator
from ..maps import NormalMetrics, channel_cosine, valid_mask
from .base import MapKind, Spec, register


class Normal(MapKind):
    name = "normal"
    fixed_channels = 3

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("mean_angle", False), Metric("median_angle", False),
                Metric("within_11.25", True), Metric("within_22.5", True), Metric("within_30", True))

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return valid_mask("normal", target)

    def map_loss(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (1.0 - channel_cosine(pred, target, eps=1e-8))[valid[:, 0]].mean()

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return NormalMetrics(convention)

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        return (1.0 - channel_cosine(student, teacher, eps=1e-8)).mean()

    def blind_predictors(self, spec: Spec, train_targets: np.ndarray) -> dict[str, torch.Tensor]:
        mean = torch.from_numpy(train_targets.mean(axis=(0, 2, 3)))
        return {"mean_normal": mean / mean.norm()}

    def show(self, x: torch.Tensor) -> np.ndarray:
        return (torch.nn.functional.normalize(x, dim=0).permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1)


register(Normal())
