"""One class per image: cross-entropy; accuracy, and top-5 accuracy when there are more than 5 classes."""

from __future__ import annotations

import torch

from .. import image
from ..accumulate import Metric, MetricAccumulator
from .base import Kind, Spec, register, soft_kl

#: PyTorch's cross-entropy default, the usual "no label" for image-level classes.
CLASS_IGNORE_INDEX = -100


class Classification(Kind):
    name = "classification"
    min_channels = 2
    channel_word = yaml_channels = "classes"
    class_scores = True
    uses_ignore_index = True
    default_ignore_index = CLASS_IGNORE_INDEX

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("accuracy", True),) + ((Metric("top5", True),) if spec.channels > 5 else ())

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return image.classification_loss(pred, target, spec.channels, spec.ignore_index, spec.class_weights,
                                         spec.label)

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return image.ClassificationMetrics(spec.channels, spec.ignore_index, spec.label)

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        return soft_kl(student, teacher, temperature)


register(Classification())
