"""The interface every task kind's metrics share: statistics collected batch by batch, figures at the end.

Apart from the kinds (`dense.py`, `image.py`) so that each imports it without importing the other.
"""

from __future__ import annotations

import math

import torch


class MetricAccumulator:
    """Collects a split's sufficient statistics batch by batch; `compute` gives the figures."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class _BatchMean:
    """A figure averaged per batch, then over batches weighted by batch size (AdaShare's way)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.images = 0

    def add(self, batch_value: float, batch_size: int) -> None:
        if math.isfinite(batch_value):
            self.total += batch_value * batch_size
            self.images += batch_size

    def value(self) -> float:
        return self.total / self.images if self.images else float("nan")
