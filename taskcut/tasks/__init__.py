"""Task kinds: how each task is trained (loss) and judged (metrics with directions), and delta_T."""

from .dense import (CONVENTIONS, IGNORE_INDEX, TASK_KINDS, DeltaReport, Metric, MetricAccumulator, TaskSpec,
                    delta_t, resize_to, valid_mask)

__all__ = ["CONVENTIONS", "IGNORE_INDEX", "TASK_KINDS", "DeltaReport", "Metric", "MetricAccumulator", "TaskSpec",
           "delta_t", "resize_to", "valid_mask"]
