"""Task specs: how each task is trained (loss) and judged (metrics with directions).

Everything is keyed by task name; a task's *kind* decides its loss and metrics. Dense kinds
(segmentation, normal, depth, keypoint, edge) predict maps: predictions arrive at the model's
feature resolution and are resized to the target size here, in one place, by bilinear
interpolation (`align_corners=False`), for losses and metrics alike. Image-level kinds
(classification, regression, binary) predict (B, C) and are never resized; `custom` tasks
bring their own loss and metrics (see `image.py` for all four).

Specs are built with `TaskSpec(name, kind, channels, ...)` or, more readably, with the
constructors (`Task` is `TaskSpec`): `Task.classification(10).named("cls")`.

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

import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn.functional as F

from ..errors import TaskcutError
from ..trust import require_trusted, task_references
from . import image
from .accumulate import MetricAccumulator, _BatchMean

TaskKind = Literal["segmentation", "normal", "depth", "keypoint", "edge",
                   "classification", "regression", "binary", "custom"]
#: Kinds that predict a map per image, resized to the target's size.
DENSE_KINDS: tuple[str, ...] = ("segmentation", "normal", "depth", "keypoint", "edge")
#: Kinds that predict one (B, C) row per image, never resized (`custom` may be either).
IMAGE_KINDS: tuple[str, ...] = ("classification", "regression", "binary")
TASK_KINDS: tuple[str, ...] = DENSE_KINDS + IMAGE_KINDS + ("custom",)
IGNORE_INDEX = 255
#: PyTorch's cross-entropy default, the usual "no label" for image-level classes.
CLASS_IGNORE_INDEX = -100
REGRESSION_LOSSES: tuple[str, ...] = ("l1", "mse")
#: How `Task.custom` and saved specs spell a metric's direction.
DIRECTIONS: dict[str, bool] = {"higher": True, "lower": False}


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
    # Regression reports MSE too, but delta_T takes MAE alone: one figure per task, in the
    # task's own units, that an outlier does not dominate.
    "regression": (Metric("mae", False), Metric("mse", False, in_delta=False)),
    "binary": (Metric("map", True),),
}


def import_reference(ref: str) -> Callable[..., Any]:
    """The callable a "module:function" reference names (dotted attributes allowed: "mod:Class.method").

    Saved custom tasks carry references, not pickled functions, so a spec file stays
    readable JSON and loads only code that is importable where it is loaded.
    """
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"reference {ref!r} is not of the form \"module:function\"")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"reference {ref!r} does not import: {exc}") from exc
    if not callable(obj):
        raise ValueError(f"reference {ref!r} names {type(obj).__name__}, not a function")
    return obj


def _direction(name: str, direction: object) -> bool:
    if direction not in DIRECTIONS:
        raise ValueError(f"metric {name!r}: direction must be \"higher\" or \"lower\" (which way is better), "
                         f"got {direction!r}")
    return DIRECTIONS[direction]  # type: ignore[index]


def _resolve(what: str, fn: Callable[..., Any] | str) -> tuple[Callable[..., Any], str | None]:
    """A callable, and its reference when it was given as a "module:function" string."""
    if isinstance(fn, str):
        return import_reference(fn), fn
    if not callable(fn):
        raise ValueError(f"{what} must be a callable or a \"module:function\" string, got {type(fn).__name__}")
    return fn, None


@dataclass(frozen=True)
class TaskSpec:
    """A task by name: its kind, its output channels and the kind's settings.

    `channels` is the number of classes (segmentation, classification), outputs (regression)
    or labels (binary), the fixed map depth of normal (3) / depth, keypoint, edge (1), and for
    custom tasks whatever the head gives, 0 when unknown.

    The custom fields (`loss_fn`, `custom_metrics`, `reference`) take no part in equality or
    hashing: functions compare by identity, which would make two loads of one saved spec
    differ, and the spec must stay hashable.
    """

    name: str
    kind: str
    channels: int
    ignore_index: int = IGNORE_INDEX
    #: Per-class weights of the segmentation loss, from the data (Taskonomy's prior factors).
    class_weights: tuple[float, ...] | None = None
    #: Regression only: "l1" (robust to outliers, the default) or "mse".
    regression_loss: str = "l1"
    #: Custom only: loss(pred, target) -> scalar tensor.
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(
        default=None, compare=False, hash=False)
    #: Custom only: (name, fn(pred, target) -> float, higher_is_better), all part of delta_T.
    custom_metrics: tuple[tuple[str, Callable[[torch.Tensor, torch.Tensor], Any], bool], ...] = field(
        default=(), compare=False, hash=False)
    #: Custom only: importable names, {"loss": "module:function", "metrics": {name: "module:function"}},
    #: which is what `to_dict` saves (a function object cannot be written to JSON).
    reference: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(TASK_KINDS)}")
        expected = {"normal": 3, "depth": 1, "keypoint": 1, "edge": 1}.get(self.kind)
        if expected is not None and self.channels != expected:
            raise ValueError(f"task {self.name!r} of kind {self.kind} has {expected} channels, not {self.channels}")
        if self.kind == "segmentation" and self.channels < 2:
            raise ValueError(f"segmentation task {self.name!r} needs at least 2 classes, got {self.channels}")
        label = self.label
        if self.kind == "classification" and self.channels < 2:
            raise ValueError(f"classification task {label} needs at least 2 classes, got {self.channels}")
        if self.kind in ("regression", "binary") and self.channels < 1:
            what = "output" if self.kind == "regression" else "label"
            raise ValueError(f"{self.kind} task {label} needs at least 1 {what}, got {self.channels}")
        if self.kind == "custom" and self.channels < 0:
            raise ValueError(f"custom task {label}: channels must be >= 0 (0 when unknown), got {self.channels}")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"task {label}: regression loss must be one of {', '.join(REGRESSION_LOSSES)}, "
                             f"got {self.regression_loss!r}")
        if self.kind != "regression" and self.regression_loss != "l1":
            raise ValueError(f"task {label}: regression_loss is for regression tasks, not {self.kind}")
        if self.kind == "custom":
            self._check_custom()
        elif self.loss_fn is not None or self.custom_metrics or self.reference is not None:
            raise ValueError(f"task {label}: loss_fn, custom_metrics and reference are for custom tasks; "
                             f"a {self.kind} task has its own loss and metrics")

    def _check_custom(self) -> None:
        """A custom task must say how it is trained; its metrics must be well formed and uniquely named."""
        label = self.label
        if self.loss_fn is None:
            raise ValueError(f"custom task {label} has no loss: give one, e.g. Task.custom(loss=my_loss, ...)")
        if not callable(self.loss_fn):
            raise ValueError(f"custom task {label}: loss_fn must be callable, got {type(self.loss_fn).__name__}")
        metrics = tuple(tuple(m) for m in self.custom_metrics)
        seen: set[str] = set()
        for m in metrics:
            if len(m) != 3 or not isinstance(m[0], str) or not m[0] or not callable(m[1]) or not isinstance(m[2], bool):
                raise ValueError(f"custom task {label}: each metric is (name, fn, higher_is_better), got {m!r}")
            if m[0] in seen:
                raise ValueError(f"custom task {label}: metric {m[0]!r} is given twice")
            seen.add(m[0])
        object.__setattr__(self, "custom_metrics", metrics)
        if self.reference is not None:
            ref = self.reference
            loss_ref, metric_refs = ref.get("loss"), ref.get("metrics", {})
            if set(ref) - {"loss", "metrics"} or (loss_ref is not None and not isinstance(loss_ref, str)) \
                    or not isinstance(metric_refs, Mapping) \
                    or not all(isinstance(k, str) and isinstance(v, str) for k, v in metric_refs.items()):
                raise ValueError(f"custom task {label}: reference is {{\"loss\": \"module:function\", "
                                 f"\"metrics\": {{name: \"module:function\"}}}}, got {dict(ref)!r}")
            unknown = set(metric_refs) - seen
            if unknown:
                raise ValueError(f"custom task {label}: reference names metrics it does not have: {sorted(unknown)}")
            # Frozen means frozen: a caller's later edit of its dict must not change the spec.
            frozen: dict[str, Any] = {"metrics": MappingProxyType(dict(metric_refs))}
            if loss_ref is not None:
                frozen["loss"] = loss_ref
            object.__setattr__(self, "reference", MappingProxyType(frozen))

    @property
    def label(self) -> str:
        """How errors name this task: its quoted name, or what it is while still unnamed."""
        return repr(self.name) if self.name else f"(unnamed {self.kind})"

    @property
    def dense(self) -> bool:
        """True for the kinds that predict a map resized to the target (False for image-level and custom)."""
        return self.kind in DENSE_KINDS

    # ------------------------------------------------------------------ constructors

    def named(self, name: str) -> "TaskSpec":
        """This spec under `name` (constructors return unnamed specs; a model's task dict names them)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a task name is a non-empty string, got {name!r}")
        return dataclasses.replace(self, name=name)

    @classmethod
    def segmentation(cls, classes: int, ignore_index: int = IGNORE_INDEX) -> "TaskSpec":
        """Per-pixel classes: cross-entropy; mIoU and pixel accuracy."""
        return cls("", "segmentation", classes, ignore_index=ignore_index)

    @classmethod
    def depth(cls) -> "TaskSpec":
        """Per-pixel depth (positive where known): L1; absolute/relative error and delta accuracies."""
        return cls("", "depth", 1)

    @classmethod
    def normal(cls) -> "TaskSpec":
        """Per-pixel surface normals: cosine loss; angle errors."""
        return cls("", "normal", 3)

    @classmethod
    def edge(cls) -> "TaskSpec":
        """Per-pixel edge map: MSE; MAE in delta_T."""
        return cls("", "edge", 1)

    @classmethod
    def keypoint(cls) -> "TaskSpec":
        """Per-pixel keypoint heat map: MSE; MSE in delta_T."""
        return cls("", "keypoint", 1)

    @classmethod
    def classification(cls, classes: int, ignore_index: int = CLASS_IGNORE_INDEX) -> "TaskSpec":
        """One class per image: cross-entropy; accuracy, and top-5 accuracy when there are more than 5 classes."""
        return cls("", "classification", classes, ignore_index=ignore_index)

    @classmethod
    def regression(cls, outputs: int = 1, loss: str = "l1") -> "TaskSpec":
        """`outputs` values per image: L1 or MSE over finite targets; MAE (in delta_T) and MSE."""
        return cls("", "regression", outputs, regression_loss=loss)

    @classmethod
    def binary(cls, labels: int) -> "TaskSpec":
        """Multi-label, `labels` yes/no per image: BCE with logits; mean average precision."""
        return cls("", "binary", labels)

    @classmethod
    def custom(cls, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str | None,
               metrics: Mapping[str, tuple[Callable[[torch.Tensor, torch.Tensor], Any] | str, str]] | None = None,
               channels: int = 0) -> "TaskSpec":
        """Your own loss and metrics: `metrics` is {name: (fn, "higher" | "lower")}.

        Functions may be given as "module:function" strings; those are imported now and
        recorded, which is what lets `to_dict` save the task. Every metric is in delta_T.
        """
        loss_fn, loss_ref = (None, None) if loss is None else _resolve("custom loss", loss)
        entries, metric_refs = [], {}
        for name, spec in (metrics or {}).items():
            if not isinstance(spec, (tuple, list)) or len(spec) != 2:
                raise ValueError(f"metric {name!r}: give (fn, \"higher\" | \"lower\"), got {spec!r}")
            fn, ref = _resolve(f"metric {name!r}", spec[0])
            entries.append((name, fn, _direction(name, spec[1])))
            if ref is not None:
                metric_refs[name] = ref
        reference: dict[str, Any] | None = None
        if loss_ref is not None or metric_refs:
            reference = {"metrics": metric_refs}
            if loss_ref is not None:
                reference["loss"] = loss_ref
        return cls("", "custom", channels, loss_fn=loss_fn, custom_metrics=tuple(entries), reference=reference)

    # ------------------------------------------------------------------ loss and metrics

    @property
    def metrics(self) -> tuple[Metric, ...]:
        if self.kind == "classification":
            return (Metric("accuracy", True),) + ((Metric("top5", True),) if self.channels > 5 else ())
        if self.kind == "custom":
            return tuple(Metric(name, higher) for name, _, higher in self.custom_metrics)
        return _METRICS[self.kind]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss, on the valid pixels (or images, or values) of `target`.

        Keypoint and edge maps are sparse: L1's minimiser is the conditional *median*,
        which is 0 wherever a pixel is off a line more often than on one, so L1 training
        learns to predict zeros. Squared error's minimiser is the conditional mean, a soft
        map that peaks where lines are likely; so those two tasks train with MSE, while
        their papers' metric (mean absolute error) is still reported.

        Image-level kinds are not resized (see `image.py`); a custom task's loss gets the
        prediction and target exactly as given.
        """
        if not self.dense:
            return self._image_loss(pred, target)
        self.check_target(pred, target)
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
            cos = channel_cosine(pred, target, eps=1e-8)
            return (1.0 - cos)[valid[:, 0]].mean()
        if self.kind == "depth":
            return (pred - target).abs()[valid].mean()
        return ((pred - target) ** 2)[valid].mean()

    def check_target(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """A dense target must fit the output it is compared with (maps may differ in size only: the
        prediction is resized): a 2-channel depth map for a 1-channel output would broadcast silently."""
        if not self.dense:
            return
        if self.kind == "segmentation":
            fits = target.dim() == pred.dim() - 1 and target.shape[0] == pred.shape[0]
            wanted = f"({pred.shape[0]}, H, W) class indices"
        else:
            fits = target.dim() == pred.dim() and tuple(target.shape[:2]) == tuple(pred.shape[:2])
            wanted = f"({pred.shape[0]}, {pred.shape[1]}, H, W)"
        if not fits:
            raise TaskcutError(f"task {self.label}: the target has shape {tuple(target.shape)} for an output of shape "
                               f"{tuple(pred.shape)}; a {self.kind} target is {wanted}")

    def _image_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return image.classification_loss(pred, target, self.channels, self.ignore_index, self.class_weights,
                                             self.label)
        if self.kind == "regression":
            return image.regression_loss(pred, target, self.channels, self.regression_loss, self.label)
        if self.kind == "binary":
            return image.binary_loss(pred, target, self.channels, self.label)
        assert self.loss_fn is not None  # checked at construction
        out = self.loss_fn(pred, target)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"custom task {self.label}: the loss must return a tensor, got {type(out).__name__}")
        return out

    def accumulator(self, convention: str = "standard") -> "MetricAccumulator":
        """Metrics by `convention`: `standard` (pixel-level over the split) or `adashare` (see `CONVENTIONS`).

        The conventions differ only in how dense maps are resized and averaged; image-level
        and custom kinds compute the same figures under both.
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown metric convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
        if not self.dense:
            if self.kind == "classification":
                return image.ClassificationMetrics(self.channels, self.ignore_index, self.label)
            if self.kind == "regression":
                return image.RegressionMetrics(self.channels, self.label)
            if self.kind == "binary":
                return image.BinaryMetrics(self.channels, self.label)
            return image.CustomMetrics(self.custom_metrics)
        if self.kind == "segmentation":
            return SegmentationMetrics(self.channels, self.ignore_index, convention)
        if self.kind == "normal":
            return NormalMetrics(convention)
        if self.kind == "depth":
            return DepthMetrics(convention)
        return DenseErrorMetrics(convention)

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, object]:
        """The spec as JSON-ready data (without its name, which is the key it is saved under).

        Settings are written only where they differ from the field defaults, so dense specs
        save exactly as before. Class weights come from the data and are not saved.
        A custom task saves its functions' "module:function" references; one built from
        plain Python functions cannot be saved, and says so.
        """
        out: dict[str, object] = {"kind": self.kind, "channels": self.channels}
        if self.kind in ("segmentation", "classification") and self.ignore_index != IGNORE_INDEX:
            out["ignore_index"] = self.ignore_index
        if self.regression_loss != "l1":
            out["regression_loss"] = self.regression_loss
        if self.kind == "custom":
            ref = self.reference or {}
            metric_refs: Mapping[str, str] = ref.get("metrics", {})
            if ref.get("loss") is None:
                raise ValueError(f"custom task {self.label} cannot be saved: its loss must be given as an importable "
                                 f"\"module:function\" string (Task.custom(\"package.module:my_loss\", ...)), "
                                 f"not as a Python object")
            missing = [name for name, _, _ in self.custom_metrics if name not in metric_refs]
            if missing:
                raise ValueError(f"custom task {self.label} cannot be saved: metric(s) {', '.join(map(repr, missing))} "
                                 f"must be given as importable \"module:function\" strings, not as Python objects")
            out["loss"] = ref["loss"]
            out["metrics"] = {name: {"fn": metric_refs[name], "direction": "higher" if higher else "lower"}
                              for name, _, higher in self.custom_metrics}
        return out

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, object]) -> "TaskSpec":
        """The spec `to_dict` wrote (read from a file); custom functions are imported from their
        references only when trusted (`taskcut.trust`): a file is data."""
        kind, channels = str(data["kind"]), int(data["channels"])  # type: ignore[call-overload]
        if kind == "custom":
            require_trusted(task_references(name, data), f"the saved task {name!r}")
            if not isinstance(data.get("loss"), str):
                raise ValueError(f"custom task {name!r}: saved spec has no \"loss\" reference (\"module:function\")")
            metrics_data = data.get("metrics", {})
            if not isinstance(metrics_data, Mapping):
                raise ValueError(f"custom task {name!r}: saved \"metrics\" must map names to {{fn, direction}}")
            metrics: dict[str, tuple[Callable[..., Any] | str, str]] = {}
            for metric, entry in metrics_data.items():
                if not isinstance(entry, Mapping) or not isinstance(entry.get("fn"), str):
                    raise ValueError(f"custom task {name!r}: saved metric {metric!r} needs a \"fn\" reference "
                                     f"and a \"direction\", got {entry!r}")
                metrics[str(metric)] = (str(entry["fn"]), str(entry.get("direction")))
            return cls.custom(str(data["loss"]), metrics, channels=channels).named(name)
        kwargs: dict[str, Any] = {}
        if "ignore_index" in data:
            kwargs["ignore_index"] = int(data["ignore_index"])  # type: ignore[call-overload]
        if "regression_loss" in data:
            kwargs["regression_loss"] = str(data["regression_loss"])
        return cls(name=name, kind=kind, channels=channels, **kwargs)


#: The constructor-style name: `Task.classification(10).named("cls")`.
Task = TaskSpec


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


def delta_fields(metrics: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]],
                 tasks: Mapping[str, TaskSpec]) -> dict[str, object]:
    """`delta_t(...).to_dict()` for a report; where a reference metric is 0 the relative change is undefined,
    and the report says why (`delta_T` None, `delta_T_undefined`) instead of failing, keeping the metrics."""
    try:
        return delta_t(metrics, reference, tasks).to_dict()
    except ValueError as exc:
        return {"delta_T": None, "delta_T_undefined": str(exc)}


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
        if not parts:
            raise ValueError(f"delta_T: task {name!r} has no metric that counts toward delta_T")
        report.per_task[name] = sum(parts) / len(parts)
    return report
