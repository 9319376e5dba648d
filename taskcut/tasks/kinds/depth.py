"""Per-pixel depth (positive where known): L1; absolute/relative error and delta accuracies."""

from __future__ import annotations

import numpy as np
import torch

from ..accumulate import Metric, MetricAccumulator
from ..maps import DepthMetrics, valid_mask
from .base import MapKind, Spec, register


class Depth(MapKind):
    name = "depth"
    fixed_channels = 1

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("abs_err", False), Metric("rel_err", False),
                Metric("delta_1.25", True), Metric("delta_1.25^2", True), Metric("delta_1.25^3", True))

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return valid_mask("depth", target)

    def map_loss(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs()[valid].mean()

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return DepthMetrics(convention)

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        return (student - teacher).abs().mean()

    def blind_predictors(self, spec: Spec, train_targets: np.ndarray) -> dict[str, torch.Tensor]:
        valid = np.isfinite(train_targets) & (train_targets > 0)
        return {"mean_depth": torch.tensor([float(train_targets[valid].mean())]),
                "mean_depth_map": torch.from_numpy(train_targets.mean(axis=0))}

    def map_style(self) -> dict:
        return {"cmap": "viridis"}


register(Depth())
