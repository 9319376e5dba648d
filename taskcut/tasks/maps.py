"""Dense maps: the one agreed resize of a prediction to its target, which pixels have ground truth, and
the accumulators of the map kinds' metrics (segmentation, normals, depth, keypoint and edge errors).

Predictions arrive at the model's feature resolution and are resized to the target size here,
in one place, by bilinear interpolation (`align_corners=False`), for losses and metrics alike.
Metrics accumulate sufficient statistics over a whole split (confusion matrix, sums and pixel
counts, an angle histogram), so a split's figure is the pixel-level figure, not a mean of
per-batch means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .accumulate import MetricAccumulator, _BatchMean

#: The "no label" of segmentation maps.
IGNORE_INDEX = 255


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


def channel_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`F.cosine_similarity(a, b, dim=1, eps)` (each norm floored at `eps`) for maps (N, C, H, W), computed
    from sums of products: torch 2.13's vector norm over the channel axis of such a map is about 250x
    slower on CPU (22 ms against 0.09 ms for a 32x3x64x64 batch), which made normals the costliest part
    of a training step. The floor is applied before the square root, so a zero vector has a gradient."""
    floor = eps * eps
    norm_a = (a * a).sum(dim=1).clamp_min(floor).sqrt()
    norm_b = (b * b).sum(dim=1).clamp_min(floor).sqrt()
    return (a * b).sum(dim=1) / (norm_a * norm_b)


def valid_mask(kind: str, target: torch.Tensor) -> torch.Tensor:
    """Pixels with ground truth: (B,1,H,W) bool. Normals need a non-zero vector, depth a positive value."""
    if kind == "normal":
        return ((target * target).sum(dim=1, keepdim=True) > 0.25) & torch.isfinite(target).all(dim=1, keepdim=True)
    if kind == "depth":
        return torch.isfinite(target) & (target > 0)
    return torch.isfinite(target)


# --------------------------------------------------------------------------- metrics


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
        cos = channel_cosine(pred.to(torch.float64), target.to(torch.float64), eps=1e-12)
        ang = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))[valid].cpu()
        self.sum += float(ang.sum())
        self.count += ang.numel()
        for thr in self.within:
            self.within[thr] += int((ang < thr).sum())
        self.hist += torch.bincount((ang / self.BIN).floor().to(torch.int64).clamp(max=len(self.hist) - 1),
                                    minlength=len(self.hist))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {name: float("nan") for name in ("mean_angle", "median_angle", "within_11.25", "within_22.5",
                                                    "within_30")}
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
            return {name: float("nan") for name in ("abs_err", "rel_err", "delta_1.25", "delta_1.25^2", "delta_1.25^3")}
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
