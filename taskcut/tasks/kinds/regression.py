"""`outputs` values per image: L1 or MSE over finite targets; MAE (in delta_T) and MSE."""

from __future__ import annotations

import torch

from .. import image
from ..accumulate import Metric, MetricAccumulator
from .base import Kind, Spec, register


class Regression(Kind):
    name = "regression"
    min_channels = 1
    channel_word = "output"
    takes_regression_loss = True

    yaml_channels = "outputs"

    def from_yaml(self, name: str, entry: dict) -> dict:
        return {**super().from_yaml(name, entry), "regression_loss": entry.get("regression_loss") or "l1"}

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        # MSE is reported too, but delta_T takes MAE alone: one figure per task, in the task's own
        # units, that an outlier does not dominate
        return (Metric("mae", False), Metric("mse", False, in_delta=False))

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return image.regression_loss(pred, target, spec.channels, spec.regression_loss, spec.label)

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return image.RegressionMetrics(spec.channels, spec.label)

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        return (student - teacher).abs().mean()


register(Regression())
