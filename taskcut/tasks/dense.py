"""Task specs: a task by name, its kind and the kind's settings; and delta_T.

Everything is keyed by task name; a task's *kind* (`taskcut.tasks.kinds`, one module per kind,
found by name in one registry) decides its loss, metrics, distillation loss, image-blind
predictors and drawing; the spec asks its kind. Map kinds (segmentation, normal, depth,
keypoint, edge) predict maps resized to the target (`maps.py`); image-level kinds
(classification, regression, binary) predict (B, C) and are never resized (`image.py`);
`custom` tasks bring their own loss and metrics; a user's registered kind goes alike.

Specs are built with `TaskSpec(name, kind, channels, ...)` or, more readably, with the
constructors (`Task` is `TaskSpec`): `Task.classification(10).named("cls")`.

delta_T convention (as in AdaShare, DiSparse and CUT): for task t with metrics M_i and a
baseline's M_b,i, delta_t = mean_i (-1)^l_i (M_i - M_b,i) / M_b,i * 100, where l_i = 1 when
lower is better; delta_T is the mean of delta_t over tasks. Positive means better than the
baseline. Metrics marked `in_delta=False` (variants and diagnostics) are reported but not
part of delta_T.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

import torch

from ..trust import require_trusted, task_references
from .accumulate import Metric, MetricAccumulator
from .kinds import BUILT_IN, KINDS, kind_of, load_kind, reference_of
from .kinds.classification import CLASS_IGNORE_INDEX
from .maps import CONVENTIONS, IGNORE_INDEX
from .references import import_object

TaskKind = Literal["segmentation", "normal", "depth", "keypoint", "edge",
                   "classification", "regression", "binary", "custom"]
#: The built-in kinds that predict a map per image, resized to the target's size.
DENSE_KINDS: tuple[str, ...] = tuple(k for k in BUILT_IN if KINDS[k].dense)
#: The built-in kinds that predict one (B, C) row per image, never resized (`custom` may be either).
IMAGE_KINDS: tuple[str, ...] = tuple(k for k in BUILT_IN if not KINDS[k].dense and k != "custom")
#: The built-in kinds; a user's kind registers beside them (`taskcut.tasks.kinds.register`).
TASK_KINDS: tuple[str, ...] = BUILT_IN
REGRESSION_LOSSES: tuple[str, ...] = ("l1", "mse")
#: How `Task.custom` and saved specs spell a metric's direction.
DIRECTIONS: dict[str, bool] = {"higher": True, "lower": False}


def import_reference(ref: str) -> Callable[..., Any]:
    """The callable a "module:function" reference names (dotted attributes allowed: "mod:Class.method").

    Saved custom tasks carry references, not pickled functions, so a spec file stays
    readable JSON and loads only code that is importable where it is loaded.
    """
    obj = import_object(ref)
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
        kind = kind_of(self.kind) if self.kind in KINDS else None
        if kind is None:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        kind.check(self)
        label = self.label
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"task {label}: regression loss must be one of {', '.join(REGRESSION_LOSSES)}, "
                             f"got {self.regression_loss!r}")
        if not getattr(kind, "takes_regression_loss", False) and self.regression_loss != "l1":
            raise ValueError(f"task {label}: regression_loss is for regression tasks, not {self.kind}")
        if not getattr(kind, "takes_functions", False) and (self.loss_fn is not None or self.custom_metrics
                                                            or self.reference is not None):
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
        return kind_of(self.kind).dense

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
        return kind_of(self.kind).metrics(self)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss, on the valid pixels (or images, or values) of `target` (`Kind.loss`).

        Dense maps are resized to the target first; image-level kinds are not resized; a custom
        task's loss gets the prediction and target exactly as given.
        """
        return kind_of(self.kind).loss(self, pred, target)

    def check_target(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """A target must fit the output it is compared with (`Kind.check_target`): a 2-channel depth map
        for a 1-channel output would broadcast silently."""
        kind_of(self.kind).check_target(self, pred, target)

    def accumulator(self, convention: str = "standard") -> "MetricAccumulator":
        """Metrics by `convention`: `standard` (pixel-level over the split) or `adashare` (see `CONVENTIONS`).

        The conventions differ only in how dense maps are resized and averaged; image-level
        and custom kinds compute the same figures under both.
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown metric convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
        return kind_of(self.kind).accumulator(self, convention)

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, object]:
        """The spec as JSON-ready data (without its name, which is the key it is saved under).

        Settings are written only where they differ from the field defaults, so dense specs
        save exactly as before. Class weights come from the data and are not saved.
        A custom task saves its functions' "module:function" references; one built from
        plain Python functions cannot be saved, and says so.
        """
        out: dict[str, object] = {"kind": self.kind, "channels": self.channels}
        if self.kind not in BUILT_IN:  # a user's kind: where to import it from when the file is loaded
            out["kind_ref"] = reference_of(kind_of(self.kind))
        if kind_of(self.kind).uses_ignore_index and self.ignore_index != IGNORE_INDEX:
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
        if kind not in KINDS and isinstance(data.get("kind_ref"), str):  # a user's kind, registered once trusted
            require_trusted(task_references(name, data), f"the saved task {name!r}")
            load_kind(str(data["kind_ref"]))
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
