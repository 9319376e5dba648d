"""Distillation from the dense model while a compact model is fine-tuned.

Plain fine-tuning recovers a pruned model from the labels alone, while the best teacher
there is, the dense pre-trained model on the same tasks, sits unused. Its outputs are a
dense, smooth target on every pixel (the labels are one-hot classes, sparse keypoints,
depth with holes), and they are exactly what the compact model has to reproduce to lose
nothing against the dense model, which is what delta_T measures.

Each task's distillation term suits its kind, on the outputs as the model gives them (no
resizing: teacher and student predict at the same resolution):

* segmentation, classification: KL(teacher || student) of the class distributions
  softened by `temperature`, times temperature^2 (Hinton et al.), so its gradient scale does
  not depend on the temperature;
* binary: KL of the per-label yes/no distributions (BCE against the teacher's probabilities,
  less their entropy, so it is zero where the student agrees);
* normal: 1 - cosine similarity, the task's own loss;
* depth, regression: L1; keypoint, edge: MSE; the same losses the labels train with;
* custom: MSE between the outputs.

The fine-tuning loss of task t is L_label,t + weight * L_distill,t, summed over tasks with
the tasks' loss weights. With `features` > 0 the trunk's output features are matched too
(MSE, added once, times `features`); that needs a taskcut zoo model (its trunk is a known
module) whose trunk kept its channels, i.e. unstructured pruning.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig
from ..errors import TaskcutError
from ..tasks.dense import TaskSpec
from ..tasks.kinds import kind_of


def distill_loss(spec: TaskSpec, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """How far the student's output for one task is from the teacher's, in the task's own terms."""
    if student.shape != teacher.shape:
        raise TaskcutError(f"task {spec.name!r}: the student predicts {tuple(student.shape)} but the teacher "
                           f"{tuple(teacher.shape)}; distillation needs the same output shape")
    return kind_of(spec.kind).distill_loss(spec, student, teacher.detach(), temperature)


class Teacher:
    """The dense model on the same tasks, frozen, and what it adds to each fine-tuning step.

    `attach(student)` must be called once before training: with feature distillation it
    hooks the student's trunk, so the features of the same forward pass that computes the
    task outputs are compared (no second student forward).
    """

    def __init__(self, model: nn.Module, config: DistillConfig, tasks: Mapping[str, TaskSpec]) -> None:
        self.model = model.eval()  # its forward runs under no_grad: nothing of it is trained
        self.config = config
        self.tasks = dict(tasks)
        self._student_features: list[torch.Tensor] = []
        self._teacher_features: list[torch.Tensor] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, student: nn.Module) -> None:
        if self.config.features <= 0:
            return
        self._hooks.append(_trunk(student, "student").register_forward_hook(
            lambda _m, _i, out: self._student_features.append(out)))
        self._hooks.append(_trunk(self.model, "teacher").register_forward_hook(
            lambda _m, _i, out: self._teacher_features.append(out)))

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def losses(self, image: torch.Tensor, student_outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per task the weighted distillation term; with features, a `trunk features` entry."""
        with torch.no_grad():
            taught = self.model(image)
        missing = [t for t in self.tasks if t not in taught]
        if missing:
            raise TaskcutError(f"the teacher has no output for task(s) {', '.join(missing)}; distil from the dense "
                               "model the compact one was pruned from")
        out = {name: self.config.weight * distill_loss(spec, student_outputs[name], taught[name],
                                                       self.config.temperature)
               for name, spec in self.tasks.items()}
        if self.config.features > 0:
            student, teacher = self._student_features.pop(), self._teacher_features.pop()
            self._student_features.clear()
            self._teacher_features.clear()
            if student.shape != teacher.shape:
                raise TaskcutError(f"trunk features differ in shape (student {tuple(student.shape)}, teacher "
                                   f"{tuple(teacher.shape)}): structured pruning removed trunk channels; "
                                   "distil the outputs only (features 0)")
            out[FEATURES] = self.config.features * F.mse_loss(student, teacher.detach())
        return out


#: The key of the trunk-feature term among the per-task terms.
FEATURES = "trunk features"


def _trunk(model: nn.Module, who: str) -> nn.Module:
    from ..models.multitask import MultiTaskModel

    inner = getattr(model, "module", model)  # DistributedDataParallel
    if not isinstance(inner, MultiTaskModel):
        raise TaskcutError(f"feature distillation needs a taskcut zoo model, whose trunk is known; the {who} is a "
                           f"{type(inner).__name__}: distil the outputs only (features 0)")
    return inner.trunk
