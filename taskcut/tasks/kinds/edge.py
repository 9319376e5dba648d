"""Per-pixel edge map: MSE (a sparse map, as keypoints); MAE in delta_T, as the papers report."""

from __future__ import annotations

from ..accumulate import Metric, MetricAccumulator
from ..maps import DenseErrorMetrics
from .base import MapKind, Spec, register


class Edge(MapKind):
    name = "edge"
    fixed_channels = 1

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        return (Metric("mae", False), Metric("mse", False, in_delta=False))

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        return DenseErrorMetrics(convention)

    def map_style(self) -> dict:
        return {"cmap": "viridis"}


register(Edge())
