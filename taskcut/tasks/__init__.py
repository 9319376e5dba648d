"""Task kinds: how each task is trained (loss) and judged (metrics with directions), and delta_T.

Every kind is one module of `kinds/` found by name in one registry; a user's kind registers the
same way (`register(MyKind())`) and then goes through every job.

Build specs with the constructors, e.g. `Task.segmentation(13).named("seg")`,
`Task.classification(10).named("cls")` or `Task.custom("pkg.mod:loss", {"acc": ("pkg.mod:acc", "higher")})`.
"""

from .accumulate import Metric, MetricAccumulator
from .dense import (CLASS_IGNORE_INDEX, CONVENTIONS, DENSE_KINDS, DIRECTIONS, IGNORE_INDEX, IMAGE_KINDS,
                    REGRESSION_LOSSES, TASK_KINDS, DeltaReport, Task, TaskSpec, delta_t, import_reference)
from .kinds import Kind, MapKind, kind_of, register
from .maps import resize_to, valid_mask
from .image import (BinaryMetrics, ClassificationMetrics, CustomMetrics, RegressionMetrics, average_precision)

__all__ = ["CLASS_IGNORE_INDEX", "CONVENTIONS", "DENSE_KINDS", "DIRECTIONS", "IGNORE_INDEX", "IMAGE_KINDS",
           "REGRESSION_LOSSES", "TASK_KINDS", "BinaryMetrics", "ClassificationMetrics", "CustomMetrics", "DeltaReport",
           "Kind", "MapKind", "Metric", "MetricAccumulator", "RegressionMetrics", "Task", "TaskSpec", "average_precision",
           "delta_t", "import_reference", "kind_of", "register", "resize_to", "valid_mask"]
