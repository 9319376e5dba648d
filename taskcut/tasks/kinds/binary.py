"""Multi-label, `labels` yes/no per image: BCE with logits; mean average precision."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import image
from ..accumulate import Metric, MetricAccumulator
from .base import Kind, Spec, register


class Binary(Kind):
    name = "binary"
    min_channels = 1
    channel_word = "label"
    yaml_channels = "labels"

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("map", True),)

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return image.binary_loss(pred, target, spec.channels, spec.label)

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return image.BinaryMetrics(spec.channels, spec.label)

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        # KL of the per-label Bernoullis: BCE to the teacher's probabilities less their entropy
        p = torch.sigmoid(teacher)
        return F.binary_cross_entropy_with_logits(student, p) - F.binary_cross_entropy_with_logits(teacher, p)


register(Binary())
