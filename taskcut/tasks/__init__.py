"""Task kinds: how each task is trained (loss) and judged (metrics with directions), and delta_T.

Build specs with the constructors, e.g. `Task.segmentation(13).named("seg")`,
`Task.classification(10).named("cls")` or `Task.custom("pkg.mod:loss", {"acc": ("pkg.mod:acc", "higher")})`.
"""

from .dense import (CLASS_IGNORE_INDEX, CONVENTIONS, DENSE_KINDS, DIRECTIONS, IGNORE_INDEX, IMAGE_KINDS,
                    REGRESSION_LOSSES, TASK_KINDS, DeltaReport, Metric, MetricAccumulator, Task, TaskSpec, delta_t,
                    import_reference, resize_to, valid_mask)
from .image import (BinaryMetrics, ClassificationMetrics, CustomMetrics, RegressionMetrics, average_precision)

__all__ = ["CLASS_IGNORE_INDEX", "CONVENTIONS", "DENSE_KINDS", "DIRECTIONS", "IGNORE_INDEX", "IMAGE_KINDS",
           "REGRESSION_LOSSES", "TASK_KINDS", "BinaryMetrics", "ClassificationMetrics", "CustomMetrics", "DeltaReport",
           "Metric", "MetricAccumulator", "RegressionMetrics", "Task", "TaskSpec", "average_precision", "delta_t",
           "import_reference", "resize_to", "valid_mask"]
