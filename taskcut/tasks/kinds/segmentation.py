"""Per-pixel classes: cross-entropy (with the data's class weights); mIoU and pixel accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..accumulate import Metric, MetricAccumulator
from ..maps import IGNORE_INDEX, SegmentationMetrics, resize_to
from .base import MapKind, Spec, register, soft_kl


class Segmentation(MapKind):
    name = "segmentation"
    min_channels = 2
    channel_word = yaml_channels = "classes"
    class_scores = True
    uses_ignore_index = True
    default_ignore_index = IGNORE_INDEX

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("miou", True), Metric("pixel_acc", True), Metric("miou_tp", True, in_delta=False))

    def _fits(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[bool, str]:
        fits = target.dim() == pred.dim() - 1 and target.shape[0] == pred.shape[0]
        return fits, f"({pred.shape[0]}, H, W) class indices"

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check_target(spec, pred, target)
        pred = resize_to(pred, target.shape[-2:])
        weight = None if spec.class_weights is None else \
            torch.tensor(spec.class_weights, dtype=pred.dtype, device=pred.device)
        return F.cross_entropy(pred, target, weight=weight, ignore_index=spec.ignore_index)

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return SegmentationMetrics(spec.channels, spec.ignore_index, convention)

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        return soft_kl(student, teacher, temperature)

    def blind_predictors(self, spec: Spec, train_targets: np.ndarray) -> dict[str, torch.Tensor]:
        counts = np.bincount(train_targets[train_targets != spec.ignore_index].ravel(), minlength=spec.channels)
        logits = torch.full((spec.channels,), -1.0)
        logits[int(counts.argmax())] = 1.0
        return {"most_frequent_class": logits}

    def map_style(self) -> dict:
        return {"cmap": "tab10", "vmin": -0.5, "vmax": 9.5, "interpolation": "nearest"}

    def show(self, x: torch.Tensor) -> np.ndarray:
        return (x.argmax(0) if x.dim() == 3 else x).numpy().astype(float)


register(Segmentation())
