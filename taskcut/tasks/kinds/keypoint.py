"""Per-pixel keypoint heat map: MSE; MSE in delta_T (MAE reported).

Keypoint maps are sparse: L1's minimiser is the conditional median, 0 wherever a pixel is off a
keypoint more often than on one, so the map trains with squared error, whose minimiser is the
conditional mean. Predicting zeros gets a lower MAE than any soft map, so MAE would reward the
blind predictor: delta_T uses the MSE the head is trained on.
"""

from __future__ import annotations

from ..accumulate import Metric, MetricAccumulator
from ..maps import DenseErrorMetrics
from .base import MapKind, Spec, register


class Keypoint(MapKind):
    name = "keypoint"
    fixed_channels = 1

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("mae", False, in_delta=False), Metric("mse", False))

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return DenseErrorMetrics(convention)

    def map_style(self) -> dict:
        return {"cmap": "viridis"}


register(Keypoint())
