"""Your own loss and metrics, as functions (`Task.custom`): the task's spec carries them."""

from __future__ import annotations

import torch

from .. import image
from ..accumulate import Metric, MetricAccumulator
from .base import Kind, Spec, register


class Custom(Kind):
    name = "custom"
    takes_functions = True

    def check(self, spec: Spec) -> None:
        if spec.channels < 0:
            raise ValueError(f"custom task {spec.label}: channels must be >= 0 (0 when unknown), got {spec.channels}")
        spec._check_custom()

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return tuple(Metric(name, higher) for name, _, higher in spec.custom_metrics)

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = spec.loss_fn(pred, target)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"custom task {spec.label}: the loss must return a tensor, got {type(out).__name__}")
        return out

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return image.CustomMetrics(spec.custom_metrics)


register(Custom())
