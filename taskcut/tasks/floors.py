"""The bars a base model trained on `synth` must clear to count as having learnt every task.

Each bar compares the model with an image-blind predictor on the same split (see
`trivial.py`), so "learnt" means "uses the image", not "matches a hard-coded number".
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..data.synth import OBJECT_CLASSES
from ..train.evaluate import Metrics
from .maps import SegmentationMetrics


def _bar(value: float, bar: float, higher_is_better: bool, what: str) -> dict[str, object]:
    passed = value >= bar if higher_is_better else value <= bar
    return {"value": value, "bar": bar, "passed": bool(passed), "what": what}


def synth_floors(metrics: Metrics, trivial: Mapping[str, Metrics],
                 seg: SegmentationMetrics | None) -> dict[str, dict[str, object]]:
    """Checks per task: value, bar, passed. Tasks absent from `metrics` are skipped."""
    checks: dict[str, dict[str, object]] = {}
    if "seg" in metrics:
        base = trivial["most_frequent_class"]["seg"]["pixel_acc"]
        checks["seg_pixel_acc_gain"] = _bar(metrics["seg"]["pixel_acc"] - base, 0.40, True,
                                            "pixel accuracy minus that of always predicting the most frequent class")
        checks["seg_miou"] = _bar(metrics["seg"]["miou"], 0.50, True, "mIoU over all classes")
        if seg is not None:
            iou = seg.iou()[list(OBJECT_CLASSES)]
            obj = float(torch.nan_to_num(iou, nan=0.0).mean())
            checks["seg_object_miou"] = _bar(obj, 0.20, True, "mean IoU over the object-shape classes alone")
    if "normal" in metrics:
        ratio = metrics["normal"]["mean_angle"] / trivial["mean_normal"]["normal"]["mean_angle"]
        checks["normal_angle_ratio"] = _bar(ratio, 0.40, False, "mean angle error / that of the mean normal")
    if "depth" in metrics:
        err = metrics["depth"]["abs_err"]
        checks["depth_vs_mean"] = _bar(err / trivial["mean_depth"]["depth"]["abs_err"], 0.35, False,
                                       "absolute error / that of the mean depth")
        checks["depth_vs_mean_map"] = _bar(err / trivial["mean_depth_map"]["depth"]["abs_err"], 0.75, False,
                                           "absolute error / that of the training set's per-pixel mean depth map")
    for task in ("edge", "keypoint"):
        if task in metrics:
            ratio = metrics[task]["mse"] / trivial["zeros"][task]["mse"]
            checks[f"{task}_mse_ratio"] = _bar(ratio, 0.70, False, "mean squared error / that of predicting zeros")
    return checks
