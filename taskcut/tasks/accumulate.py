"""What every task kind's metrics share: the figures a task reports (`Metric`), and statistics collected
batch by batch with figures at the end (`MetricAccumulator`).

Apart from the kinds (`kinds/`, `maps.py`, `image.py`) and the spec (`dense.py`) so that each imports it
without importing the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Metric:
    """One figure a task reports, and which way is better."""

    name: str
    higher_is_better: bool
    in_delta: bool = True


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
