"""Image-level task kinds: one prediction per image, not per pixel.

`classification`, `regression` and `binary` (multi-label) take predictions of shape
(B, C) straight from a pooled head; unlike the dense kinds nothing is resized, because
there is no spatial grid to agree on. `custom` tasks bring their own loss and metrics.

As for the dense kinds, a split's figures come from statistics gathered over the whole
split (counts and sums; for mAP the split's scores themselves, which are small at one row
per image), never from a mean of per-batch figures, except for custom metrics, whose
statistics we cannot know: those are per-batch figures averaged weighted by batch size.

Non-finite regression and binary targets mark missing labels: they are left out of the
loss and the metrics, and zeroed before any arithmetic so their NaN never reaches a
gradient (the same rule the dense kinds apply to invalid pixels).

The spec (`TaskSpec` in `dense.py`) imports this module; both take the accumulators' base
from `accumulate.py`, so neither imports the other back.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .accumulate import MetricAccumulator, _BatchMean

#: A custom metric: (name, fn(pred, target) -> float, higher_is_better).
CustomMetric = tuple[str, Callable[[torch.Tensor, torch.Tensor], object], bool]


# --------------------------------------------------------------------------- shape checks


def check_scores(pred: torch.Tensor, channels: int, kind: str, task: str) -> None:
    """Image-level heads give (B, C); a dense map here means a head wired to the wrong task."""
    if pred.dim() != 2 or pred.shape[1] != channels:
        raise ValueError(f"{kind} task {task} takes predictions of shape (batch, {channels}), got "
                         f"{tuple(pred.shape)}; pool and flatten the head's output")


def class_targets(target: torch.Tensor, batch: int, task: str) -> torch.Tensor:
    """Class indices (B,) as int64; anything else (one-hot, soft labels, maps) is refused."""
    if target.dim() != 1 or target.shape[0] != batch or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"classification task {task} takes integer class targets of shape ({batch},), got "
                         f"{tuple(target.shape)} of {target.dtype}")
    return target.to(torch.int64)


def value_targets(target: torch.Tensor, pred: torch.Tensor, kind: str, task: str) -> torch.Tensor:
    """Float targets shaped like `pred`; (B,) is taken as (B, 1) for a single-output task."""
    if target.dim() == 1 and pred.shape[1] == 1:
        target = target.unsqueeze(1)
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(f"{kind} task {task} takes targets of shape {tuple(pred.shape)}, got {tuple(target.shape)}")
    return target.to(pred.dtype)


# --------------------------------------------------------------------------- losses


def classification_loss(pred: torch.Tensor, target: torch.Tensor, channels: int, ignore_index: int,
                        class_weights: Sequence[float] | None, task: str) -> torch.Tensor:
    """Cross-entropy over the images whose target is not `ignore_index`.

    A batch with every target ignored gives a zero that is still attached to the graph
    (cross-entropy's mean over no images would be NaN): with image-level labels, small
    batches of unlabelled images are an ordinary case, not an error.
    """
    check_scores(pred, channels, "classification", task)
    target = class_targets(target, pred.shape[0], task)
    if not bool((target != ignore_index).any()):
        return pred.sum() * 0.0
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=pred.dtype, device=pred.device)
    return F.cross_entropy(pred, target, weight=weight, ignore_index=ignore_index)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, channels: int, loss: str, task: str) -> torch.Tensor:
    """L1 or squared error over the finite target values."""
    check_scores(pred, channels, "regression", task)
    target = value_targets(target, pred, "regression", task)
    valid = torch.isfinite(target)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    target = torch.where(valid, target, torch.zeros_like(target))
    diff = pred - target
    per_value = diff.abs() if loss == "l1" else diff ** 2
    return per_value[valid].mean()


def binary_loss(pred: torch.Tensor, target: torch.Tensor, channels: int, task: str) -> torch.Tensor:
    """Binary cross-entropy with logits over the finite labels (soft labels in [0, 1] allowed)."""
    check_scores(pred, channels, "binary", task)
    target = value_targets(target, pred, "binary", task)
    valid = torch.isfinite(target)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    target = torch.where(valid, target, torch.zeros_like(target))
    return F.binary_cross_entropy_with_logits(pred, target, reduction="none")[valid].mean()


# --------------------------------------------------------------------------- metrics


class ClassificationMetrics(MetricAccumulator):
    """Top-1 (and, with more than 5 classes, top-5) accuracy as fractions of the split's labelled images."""

    def __init__(self, classes: int, ignore_index: int, task: str = "") -> None:
        self.classes = classes
        self.ignore_index = ignore_index
        self.task = task
        self.count = 0
        self.top1 = 0
        self.top5 = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        check_scores(pred, self.classes, "classification", self.task)
        target = class_targets(target, pred.shape[0], self.task)
        valid = target != self.ignore_index
        t = target[valid].cpu()
        scores = pred.detach()[valid].to(torch.float64).cpu()
        if t.numel() and (int(t.max()) >= self.classes or int(t.min()) < 0):
            bad = int(t.max()) if int(t.max()) >= self.classes else int(t.min())
            raise ValueError(f"classification target holds class {bad}, but the task has {self.classes} classes")
        self.count += t.numel()
        self.top1 += int((scores.argmax(dim=1) == t).sum())
        if self.classes > 5 and t.numel():
            top = scores.topk(5, dim=1).indices
            self.top5 += int((top == t.unsqueeze(1)).any(dim=1).sum())

    def compute(self) -> dict[str, float]:
        names = ["accuracy"] + (["top5"] if self.classes > 5 else [])
        if self.count == 0:
            return {n: float("nan") for n in names}
        out = {"accuracy": self.top1 / self.count}
        if self.classes > 5:
            out["top5"] = self.top5 / self.count
        return out


class RegressionMetrics(MetricAccumulator):
    """Mean absolute and mean squared error over every finite target value of the split."""

    def __init__(self, outputs: int, task: str = "") -> None:
        self.outputs = outputs
        self.task = task
        self.abs = 0.0
        self.sq = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        check_scores(pred, self.outputs, "regression", self.task)
        pred = pred.detach().to(torch.float64)
        target = value_targets(target, pred, "regression", self.task)
        valid = torch.isfinite(target)
        diff = (pred - target)[valid]
        self.abs += float(diff.abs().sum())
        self.sq += float((diff ** 2).sum())
        self.count += diff.numel()

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"mae": float("nan"), "mse": float("nan")}
        return {"mae": self.abs / self.count, "mse": self.sq / self.count}


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Non-interpolated AP of one label: the mean, over its positives, of the precision at each one's rank.

    Ranks come from a stable descending sort, so tied scores keep their order in the split:
    the result is exact and reproducible (no interpolation, no random tie-breaking). NaN when
    there is no positive (AP is undefined) or a score is NaN (the ranking is).
    """
    positive = positive.to(torch.bool)
    n_pos = int(positive.sum())
    if n_pos == 0 or bool(torch.isnan(scores).any()):
        return float("nan")
    order = torch.sort(scores.to(torch.float64), descending=True, stable=True).indices
    hits = positive[order].to(torch.float64)
    precision = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    return float(precision[hits.bool()].sum() / n_pos)


class BinaryMetrics(MetricAccumulator):
    """Multi-label mean average precision over the labels with at least one positive in the split.

    AP needs the whole split's ranking, which no running sum gives, so the scores and
    targets are kept: one row of `labels` values per image. Scores are ranked as given
    (logits): AP depends only on the order, and a sigmoid could only merge distinct
    saturated logits into ties. Non-finite targets (missing labels) are left out per label.
    """

    def __init__(self, labels: int, task: str = "") -> None:
        self.labels = labels
        self.task = task
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        check_scores(pred, self.labels, "binary", self.task)
        pred = pred.detach().to(torch.float64).cpu()
        target = value_targets(target, pred, "binary", self.task).cpu()
        finite = target[torch.isfinite(target)]
        if bool(((finite != 0) & (finite != 1)).any()):
            raise ValueError(f"binary task {self.task} scores targets in {{0, 1}} (NaN for missing), "
                             f"got values such as {float(finite[(finite != 0) & (finite != 1)][0])}")
        self.scores.append(pred)
        self.targets.append(target)

    def per_label(self) -> torch.Tensor:
        """AP of each label (NaN where the split holds no positive of it)."""
        if not self.scores:
            return torch.full((self.labels,), float("nan"), dtype=torch.float64)
        scores, targets = torch.cat(self.scores), torch.cat(self.targets)
        out = torch.empty(self.labels, dtype=torch.float64)
        for k in range(self.labels):
            known = torch.isfinite(targets[:, k])
            out[k] = average_precision(scores[known, k], targets[known, k] == 1)
        return out

    def compute(self) -> dict[str, float]:
        if not self.targets:
            return {"map": float("nan")}
        has_pos = (torch.cat(self.targets) == 1).any(dim=0)
        if not bool(has_pos.any()):
            return {"map": float("nan")}
        # A label with positives but a NaN AP means NaN scores: the mean is NaN too, as it should be.
        return {"map": float(self.per_label()[has_pos].mean())}


class CustomMetrics(MetricAccumulator):
    """A custom task's figures: each `fn(pred, target)` per batch, then averaged over batches weighted by batch size.

    The functions are opaque, so there are no split-level statistics to gather: a figure that
    is not linear in the images (a ratio, an AP) is therefore a weighted mean of batch figures,
    not the split's figure. Batch size is `pred.shape[0]`. A batch whose figure is not finite
    (e.g. undefined on that batch) is left out; a metric left out of every batch reads NaN.
    """

    def __init__(self, metrics: Sequence[CustomMetric]) -> None:
        self.metrics = tuple(metrics)
        self.means = {name: _BatchMean() for name, _, _ in self.metrics}

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        batch = int(pred.shape[0]) if isinstance(pred, torch.Tensor) and pred.dim() > 0 else 1
        with torch.no_grad():
            for name, fn, _ in self.metrics:
                value = fn(pred, target)
                self.means[name].add(float(value), batch)  # type: ignore[arg-type]

    def compute(self) -> dict[str, float]:
        return {name: mean.value() for name, mean in self.means.items()}
