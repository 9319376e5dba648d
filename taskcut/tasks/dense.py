"""Task specs: how each dense task is trained (loss) and judged (metrics with directions).

Everything is keyed by task name; a task's *kind* decides its loss and metrics. Predictions
arrive at the model's feature resolution and are resized to the target size here, in one
place, by bilinear interpolation (`align_corners=False`), for losses and metrics alike.

Metrics accumulate sufficient statistics over a whole split (confusion matrix, sums and
pixel counts, an angle histogram), so a split's figure is the pixel-level figure, not a
mean of per-batch means.

delta_T convention (as in AdaShare, DiSparse and CUT): for task t with metrics M_i and a
baseline's M_b,i, delta_t = mean_i (-1)^l_i (M_i - M_b,i) / M_b,i * 100, where l_i = 1 when
lower is better; delta_T is the mean of delta_t over tasks. Positive means better than the
baseline. Metrics marked `in_delta=False` (variants and diagnostics) are reported but not
part of delta_T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping

import torch
import torch.nn.functional as F

TaskKind = Literal["segmentation", "normal", "depth", "keypoint", "edge"]
TASK_KINDS: tuple[str, ...] = ("segmentation", "normal", "depth", "keypoint", "edge")
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Metric:
    """One figure a task reports, and which way is better."""

    name: str
    higher_is_better: bool
    in_delta: bool = True


_METRICS: dict[str, tuple[Metric, ...]] = {
    "segmentation": (
        Metric("miou", True), Metric("pixel_acc", True), Metric("miou_tp", True, in_delta=False),
    ),
    "normal": (
        Metric("mean_angle", False), Metric("median_angle", False),
        Metric("within_11.25", True), Metric("within_22.5", True), Metric("within_30", True),
    ),
    "depth": (
        Metric("abs_err", False), Metric("rel_err", False),
        Metric("delta_1.25", True), Metric("delta_1.25^2", True), Metric("delta_1.25^3", True),
    ),
    # Keypoint heat maps are mostly zero: predicting zeros gets a lower MAE than any soft map a
    # model trained with squared error gives, so MAE would reward the blind predictor. delta_T
    # uses the MSE the head is trained on (the trained base beats zeros there); MAE is reported.
    "keypoint": (Metric("mae", False, in_delta=False), Metric("mse", False)),
    "edge": (Metric("mae", False), Metric("mse", False, in_delta=False)),
}


@dataclass(frozen=True)
class TaskSpec:
    """A task by name: its kind, its output channels and, for segmentation, its classes."""

    name: str
    kind: str
    channels: int
    ignore_index: int = IGNORE_INDEX
    #: Per-class weights of the segmentation loss, from the data (Taskonomy's prior factors).
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(TASK_KINDS)}")
        expected = {"normal": 3, "depth": 1, "keypoint": 1, "edge": 1}.get(self.kind)
        if expected is not None and self.channels != expected:
            raise ValueError(f"task {self.name!r} of kind {self.kind} has {expected} channels, not {self.channels}")
        if self.kind == "segmentation" and self.channels < 2:
            raise ValueError(f"segmentation task {self.name!r} needs at least 2 classes, got {self.channels}")

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return _METRICS[self.kind]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss, on the valid pixels of `target`.

        Keypoint and edge maps are sparse: L1's minimiser is the conditional *median*,
        which is 0 wherever a pixel is off a line more often than on one, so L1 training
        learns to predict zeros. Squared error's minimiser is the conditional mean, a soft
        map that peaks where lines are likely; so those two tasks train with MSE, while
        their papers' metric (mean absolute error) is still reported.
        """
        pred = resize_to(pred, target.shape[-2:])
        if self.kind == "segmentation":
            weight = None if self.class_weights is None else \
                torch.tensor(self.class_weights, dtype=pred.dtype, device=pred.device)
            return F.cross_entropy(pred, target, weight=weight, ignore_index=self.ignore_index)
        valid = valid_mask(self.kind, target)
        if not bool(valid.any()):
            return pred.sum() * 0.0
        # Invalid pixels may hold NaN; zero them first, or their NaN would reach the gradient.
        target = torch.where(valid, target, torch.zeros_like(target))
        if self.kind == "normal":
            cos = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
            return (1.0 - cos)[valid[:, 0]].mean()
        if self.kind == "depth":
            return (pred - target).abs()[valid].mean()
        return ((pred - target) ** 2)[valid].mean()

    def accumulator(self, convention: str = "standard") -> "MetricAccumulator":
        """Metrics by `convention`: `standard` (pixel-level over the split) or `adashare` (see `CONVENTIONS`)."""
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown metric convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
        if self.kind == "segmentation":
            return SegmentationMetrics(self.channels, self.ignore_index, convention)
        if self.kind == "normal":
            return NormalMetrics(convention)
        if self.kind == "depth":
            return DepthMetrics(convention)
        return DenseErrorMetrics(convention)

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "channels": self.channels}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, object]) -> "TaskSpec":
        return cls(name=name, kind=str(data["kind"]), channels=int(data["channels"]))  # type: ignore[arg-type]


#: `standard`: every figure is pixel-level over the whole split, predictions resized bilinearly.
#: `adashare`: as the AdaShare/DiSparse/CUT evaluation code computes them, for comparison with
#: their tables: predictions resized by nearest neighbour; mIoU over the classes with at least
#: one true positive; pixel accuracy, depth abs/rel error and keypoint/edge error as means of
#: per-batch figures weighted by batch size; normal angles and depth deltas pixel-level.
CONVENTIONS = ("standard", "adashare")


def resize_to(pred: torch.Tensor, size: torch.Size | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Bring a feature-resolution prediction to the target size: the one agreed resize."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    if mode == "nearest":
        return F.interpolate(pred, size=tuple(size), mode="nearest")
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def _resize_mode(convention: str) -> str:
    return "nearest" if convention == "adashare" else "bilinear"


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


def valid_mask(kind: str, target: torch.Tensor) -> torch.Tensor:
    """Pixels with ground truth: (B,1,H,W) bool. Normals need a non-zero vector, depth a positive value."""
    if kind == "normal":
        return (target.norm(dim=1, keepdim=True) > 0.5) & torch.isfinite(target).all(dim=1, keepdim=True)
    if kind == "depth":
        return torch.isfinite(target) & (target > 0)
    return torch.isfinite(target)


# --------------------------------------------------------------------------- metrics


class MetricAccumulator:
    """Collects a split's sufficient statistics batch by batch; `compute` gives the figures."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class SegmentationMetrics(MetricAccumulator):
    """mIoU and pixel accuracy from a data-set-level confusion matrix.

    `miou` is the standard mean IoU over the classes that occur in the ground truth or the
    prediction (a class with union 0 has no defined IoU and is left out). `miou_tp` is
    AdaShare's variant, which averages only the classes with at least one true positive;
    it is never lower than `miou` and is offered for comparison with published tables.
    """

    def __init__(self, classes: int, ignore_index: int = IGNORE_INDEX, convention: str = "standard") -> None:
        self.classes = classes
        self.ignore_index = ignore_index
        self.convention = convention
        self.confusion = torch.zeros(classes, classes, dtype=torch.int64)
        self.batch_acc = _BatchMean()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if target.dim() == 4:
            target = target[:, 0]
        if pred.dim() == 4:  # logits
            pred = resize_to(pred, target.shape[-2:], _resize_mode(self.convention)).argmax(dim=1)
        valid = target != self.ignore_index
        t = target[valid].to(torch.int64).cpu()
        p = pred[valid].to(torch.int64).cpu()
        if t.numel() and (int(t.max()) >= self.classes or int(t.min()) < 0):
            raise ValueError(f"segmentation target holds class {int(t.max())}, but the task has {self.classes} classes")
        self.confusion += torch.bincount(t * self.classes + p, minlength=self.classes ** 2).view(self.classes, self.classes)
        if t.numel():
            self.batch_acc.add(float((t == p).to(torch.float64).mean()), int(target.shape[0]))

    def iou(self) -> torch.Tensor:
        """Per-class IoU (NaN where a class is absent from both ground truth and prediction)."""
        c = self.confusion.to(torch.float64)
        tp = c.diag()
        union = c.sum(0) + c.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def compute(self) -> dict[str, float]:
        c = self.confusion.to(torch.float64)
        total = c.sum()
        iou = self.iou()
        present = ~torch.isnan(iou)
        tp_pos = c.diag() > 0
        out = {
            "miou": float(iou[present].mean()) if bool(present.any()) else float("nan"),
            "pixel_acc": float(c.diag().sum() / total) if total > 0 else float("nan"),
            "miou_tp": float(iou[tp_pos].mean()) if bool(tp_pos.any()) else 0.0,
        }
        if self.convention == "adashare":
            out["miou"], out["pixel_acc"] = out["miou_tp"], self.batch_acc.value()
        return out


class NormalMetrics(MetricAccumulator):
    """Angle errors in degrees between unit normals, over valid pixels.

    Mean and threshold fractions are exact; the median is read from a histogram with
    0.001-degree bins (so it is exact to 0.001 degrees) because keeping every pixel's
    error of a large split does not fit in memory.
    """

    BIN = 0.001

    def __init__(self, convention: str = "standard") -> None:
        self.convention = convention
        self.sum = 0.0
        self.count = 0
        self.within = {11.25: 0, 22.5: 0, 30.0: 0}
        self.hist = torch.zeros(int(round(180 / self.BIN)) + 1, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = resize_to(pred, target.shape[-2:], _resize_mode(self.convention))
        valid = valid_mask("normal", target)[:, 0]
        cos = F.cosine_similarity(pred.to(torch.float64), target.to(torch.float64), dim=1, eps=1e-12)
        ang = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))[valid].cpu()
        self.sum += float(ang.sum())
        self.count += ang.numel()
        for thr in self.within:
            self.within[thr] += int((ang < thr).sum())
        self.hist += torch.bincount((ang / self.BIN).floor().to(torch.int64).clamp(max=len(self.hist) - 1),
                                    minlength=len(self.hist))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {m.name: float("nan") for m in _METRICS["normal"]}
        cum = torch.cumsum(self.hist, 0)
        k = int(torch.searchsorted(cum, torch.tensor((self.count + 1) // 2)))
        return {
            "mean_angle": self.sum / self.count,
            "median_angle": (k + 0.5) * self.BIN,
            "within_11.25": 100.0 * self.within[11.25] / self.count,
            "within_22.5": 100.0 * self.within[22.5] / self.count,
            "within_30": 100.0 * self.within[30.0] / self.count,
        }


class DepthMetrics(MetricAccumulator):
    """Absolute and relative error and the delta < 1.25^k accuracies, pixel-weighted over the split."""

    def __init__(self, convention: str = "standard") -> None:
        self.convention = convention
        self.abs = 0.0
        self.rel = 0.0
        self.count = 0
        self.delta = [0, 0, 0]
        self.batch_abs, self.batch_rel = _BatchMean(), _BatchMean()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = resize_to(pred, target.shape[-2:], _resize_mode(self.convention)).to(torch.float64)
        target = target.to(torch.float64)
        valid = valid_mask("depth", target)
        p, g = pred[valid], target[valid]
        err = (p - g).abs()
        self.abs += float(err.sum())
        self.rel += float((err / g).sum())
        self.count += g.numel()
        if g.numel():
            self.batch_abs.add(float(err.mean()), int(target.shape[0]))
            self.batch_rel.add(float((err / g).mean()), int(target.shape[0]))
        ratio = torch.maximum(p.clamp(min=1e-6) / g, g / p.clamp(min=1e-6))
        for k in range(3):
            self.delta[k] += int((ratio < 1.25 ** (k + 1)).sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {m.name: float("nan") for m in _METRICS["depth"]}
        n = self.count
        if self.convention == "adashare":
            abs_err, rel_err = self.batch_abs.value(), self.batch_rel.value()
        else:
            abs_err, rel_err = self.abs / n, self.rel / n
        return {
            "abs_err": abs_err, "rel_err": rel_err,
            "delta_1.25": 100.0 * self.delta[0] / n, "delta_1.25^2": 100.0 * self.delta[1] / n,
            "delta_1.25^3": 100.0 * self.delta[2] / n,
        }


class DenseErrorMetrics(MetricAccumulator):
    """Mean absolute and mean squared error of a one-channel map (keypoint, edge)."""

    def __init__(self, convention: str = "standard") -> None:
        self.convention = convention
        self.abs = 0.0
        self.sq = 0.0
        self.count = 0
        self.batch_abs = _BatchMean()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = resize_to(pred, target.shape[-2:], _resize_mode(self.convention)).to(torch.float64)
        target = target.to(torch.float64)
        valid = valid_mask("edge", target)
        diff = (pred - target)[valid]
        self.abs += float(diff.abs().sum())
        self.sq += float((diff ** 2).sum())
        self.count += diff.numel()
        if diff.numel():
            self.batch_abs.add(float(diff.abs().mean()), int(target.shape[0]))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"mae": float("nan"), "mse": float("nan")}
        mae = self.batch_abs.value() if self.convention == "adashare" else self.abs / self.count
        return {"mae": mae, "mse": self.sq / self.count}


# --------------------------------------------------------------------------- delta_T


@dataclass
class DeltaReport:
    """delta_T and its per-task parts, in percent (positive = better than the baseline)."""

    per_task: dict[str, float] = field(default_factory=dict)

    @property
    def delta_t(self) -> float:
        return sum(self.per_task.values()) / len(self.per_task)

    def to_dict(self) -> dict[str, object]:
        return {"delta_T": self.delta_t, "per_task": dict(self.per_task)}


def delta_t(metrics: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]],
            tasks: Mapping[str, TaskSpec]) -> DeltaReport:
    """delta_T of `metrics` against `baseline` over the tasks in `tasks` (see the module doc)."""
    if not tasks:
        raise ValueError("delta_T needs at least one task")
    report = DeltaReport()
    for name, spec in tasks.items():
        if name not in metrics or name not in baseline:
            raise ValueError(f"delta_T: task {name!r} is missing from the metrics or the baseline")
        parts = []
        for metric in spec.metrics:
            if not metric.in_delta:
                continue
            m, b = metrics[name][metric.name], baseline[name][metric.name]
            if b == 0 or not math.isfinite(b) or not math.isfinite(m):
                raise ValueError(f"delta_T: baseline {name}.{metric.name} = {b} and value {m}: relative change undefined")
            sign = 1.0 if metric.higher_is_better else -1.0
            parts.append(sign * (m - b) / b * 100.0)
        report.per_task[name] = sum(parts) / len(parts)
    return report
