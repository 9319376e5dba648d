"""What a task kind is, and the registry every kind is found in.

A kind decides everything taskcut does differently per task: how its spec is checked, its loss,
its metrics and their accumulator, its distillation loss, the image-blind predictors that set
the floor a trained model must clear, how its maps are drawn in reports, and how an own
model's YAML describes it. Built-in kinds (one module each beside this one) and a user's kind
register the same way:

```python
from taskcut.tasks.kinds import Kind, register

class Counting(Kind):
    name = "counting"
    ...

register(Counting())
```

after which `TaskSpec("count", "counting", 1)` (and `kind: counting` in an own model's YAML)
goes through every command. This module imports no task spec: a spec is passed in (`spec`,
with `name`, `kind`, `channels`, `ignore_index`, `class_weights`, `regression_loss`, `label`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..accumulate import Metric, MetricAccumulator

#: The spec a kind is asked about (`taskcut.tasks.TaskSpec`; not imported here, which imports this).
Spec = Any


class Kind:
    """One task kind. Subclasses set `name` and override what differs from these defaults."""

    #: The kind's name, as specs, files and YAML spell it.
    name: str = ""
    #: Predicts a map per image, resized to the target's size (False: one row per image).
    dense: bool = False
    #: The number of output channels every task of this kind has (None: the spec says).
    fixed_channels: int | None = None
    #: The fewest channels a spec may give, and what a channel is called in errors.
    min_channels: int = 0
    channel_word: str = "channels"
    #: Outputs are class scores, so their argmax is the prediction (int8 exports report agreement).
    class_scores: bool = False
    #: Whether `ignore_index` means something for this kind (saved when not the default), and its default.
    uses_ignore_index: bool = False
    default_ignore_index: int | None = None
    #: The own-model YAML field that gives the channel count (classes, labels, outputs).
    yaml_channels: str = "channels"

    # ---------------------------------------------------------------- the spec

    def check(self, spec: Spec) -> None:
        """Refuse a spec this kind cannot train (a `ValueError` naming the task)."""
        if self.fixed_channels is not None and spec.channels != self.fixed_channels:
            raise ValueError(f"task {spec.name!r} of kind {self.name} has {self.fixed_channels} channels, not "
                             f"{spec.channels}")
        if spec.channels < self.min_channels:
            raise ValueError(f"{self.name} task {spec.label} needs at least {self.min_channels} {self.channel_word}, "
                             f"got {spec.channels}")

    def from_yaml(self, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's fields (`channels` and this kind's settings) from an own model's YAML entry."""
        if self.fixed_channels is not None:
            fields: dict[str, Any] = {"channels": self.fixed_channels}
        elif entry.get(self.yaml_channels) is None:
            raise ValueError(f"task {name!r} ({self.name}) needs {self.yaml_channels}:")
        else:
            fields = {"channels": entry[self.yaml_channels]}
        if self.uses_ignore_index:
            ignore = entry.get("ignore_index")
            fields["ignore_index"] = self.default_ignore_index if ignore is None else ignore
        return fields

    # ---------------------------------------------------------------- training and judging

    def metrics(self, spec: Spec) -> tuple[Metric, ...]:
        """The figures the task reports, which way is better, and which count in delta_T."""
        raise NotImplementedError

    def check_target(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Refuse a target that does not fit its output (one line naming the task and both shapes)."""

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss on the valid part of `target`."""
        raise NotImplementedError

    def accumulator(self, spec: Spec, convention: str) -> MetricAccumulator:
        """Gathers a split's statistics batch by batch and computes `metrics` from them."""
        raise NotImplementedError

    def distill_loss(self, spec: Spec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        """How far the student's output is from the teacher's (same shapes), in the kind's own terms;
        by default the mean squared difference."""
        return ((student - teacher) ** 2).mean()

    def blind_predictors(self, spec: Spec, train_targets: np.ndarray) -> dict[str, torch.Tensor]:
        """Image-blind predictors from the train split's targets: name -> one value per channel (or one
        map), predicted for every pixel of every image; the floor a trained model must clear."""
        return {"zeros": torch.zeros(1)}

    # ---------------------------------------------------------------- drawing

    def map_style(self) -> dict[str, Any]:
        """Matplotlib `imshow` settings for this kind's maps."""
        return {}

    def show(self, x: torch.Tensor) -> np.ndarray:
        """One output or target (C, H, W) as an image to draw."""
        return x[0].numpy()


#: Every registered kind by name, built-in ones first.
KINDS: dict[str, Kind] = {}


def register(kind: Kind, replace: bool = False) -> Kind:
    """Make `kind` known under `kind.name`; a name taken by another kind is refused unless `replace`."""
    if not isinstance(kind, Kind) or not kind.name or not isinstance(kind.name, str):
        raise ValueError(f"register takes a Kind instance with a name, got {kind!r}")
    if kind.name in KINDS and not replace and type(KINDS[kind.name]) is not type(kind):
        raise ValueError(f"task kind {kind.name!r} is already registered ({type(KINDS[kind.name]).__name__}); "
                         "pass replace=True to replace it")
    KINDS[kind.name] = kind
    return kind


def reference_of(kind: Kind) -> str:
    """The "module:Class" a registered kind is imported from (what a saved file records of a kind that
    is not built in, so that loading it can register it again once trusted)."""
    return f"{type(kind).__module__}:{type(kind).__qualname__}"


def load_kind(reference: str) -> Kind:
    """Import the `Kind` subclass "module:Class" names, register an instance and return it. This runs
    the module's code: callers import only references the user trusts (`taskcut.trust`)."""
    from ..references import import_object

    obj = import_object(reference, "task kind")
    if not (isinstance(obj, type) and issubclass(obj, Kind)):
        raise ValueError(f"task kind {reference!r} names {getattr(obj, '__name__', obj)!r}, not a Kind subclass")
    try:
        kind = obj()
    except Exception as exc:
        raise ValueError(f"task kind {reference!r} cannot be made: {type(exc).__name__}: {exc}") from exc
    existing = KINDS.get(kind.name)
    return existing if existing is not None and type(existing) is obj else register(kind)


def kind_of(name: str) -> Kind:
    """The registered kind called `name`; an unknown one is a `ValueError` listing the known ones."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kind {name!r}; expected one of {', '.join(KINDS)}") from None


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence of the student's softened class distribution from the teacher's, times T^2 (Hinton)."""
    t = temperature
    log_student = F.log_softmax(student / t, dim=1)
    log_teacher = F.log_softmax(teacher / t, dim=1)
    per_item = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return per_item.mean() * t * t


class MapKind(Kind):
    """A kind that predicts a map per image: resized to the target's size (bilinear, in one place),
    trained on the target's valid pixels (`valid`), judged pixel-level over the split."""

    dense = True

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        """Pixels with ground truth, (B, 1, H, W) bool: finite ones by default."""
        return torch.isfinite(target)

    def check_target(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> None:
        """A target must fit its output (maps may differ in size only: the prediction is resized); a
        2-channel depth map for a 1-channel output would broadcast silently."""
        fits, wanted = self._fits(pred, target)
        if not fits:
            from ...errors import TaskcutError

            raise TaskcutError(f"task {spec.label}: the target has shape {tuple(target.shape)} for an output of shape "
                               f"{tuple(pred.shape)}; a {self.name} target is {wanted}")

    def _fits(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[bool, str]:
        fits = target.dim() == pred.dim() and tuple(target.shape[:2]) == tuple(pred.shape[:2])
        return fits, f"({pred.shape[0]}, {pred.shape[1]}, H, W)"

    def loss(self, spec: Spec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from ..maps import resize_to

        self.check_target(spec, pred, target)
        pred = resize_to(pred, target.shape[-2:])
        valid = self.valid(target)
        if not bool(valid.any()):
            return pred.sum() * 0.0
        # Invalid pixels may hold NaN; zero them first, or their NaN would reach the gradient.
        target = torch.where(valid, target, torch.zeros_like(target))
        return self.map_loss(pred, target, valid)

    def map_loss(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The loss on valid pixels of a resized prediction; squared error by default."""
        return ((pred - target) ** 2)[valid].mean()
