"""Per-task metrics of a model (or any predictor) over a whole split."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..data.dataset import to_device, DataSet, batches_of
from ..tasks.accumulate import MetricAccumulator
from ..tasks.dense import TaskSpec

Predictor = Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]
Metrics = dict[str, dict[str, float]]


def collect(predict: Predictor, dataset: DataSet, tasks: Mapping[str, TaskSpec],
            batch_size: int = 32, device: torch.device | str = "cpu",
            convention: str = "standard") -> dict[str, MetricAccumulator]:
    """Run `predict(batch) -> {task: prediction}` over `dataset`; the filled accumulators per task.

    Callers that need more than the headline figures (per-class IoU) read the accumulators.
    `convention` is `standard` or `adashare` (`taskcut.tasks.CONVENTIONS`).
    """
    accumulators = {name: spec.accumulator(convention) for name, spec in tasks.items()}
    with torch.no_grad():
        for batch in batches_of(dataset, batch_size):
            batch = to_device(batch, device)
            preds = predict(batch)
            for name, acc in accumulators.items():
                tasks[name].check_target(preds[name], batch[name])
                acc.update(preds[name], batch[name])
    return accumulators


def evaluate_predictor(predict: Predictor, dataset: DataSet, tasks: Mapping[str, TaskSpec],
                       batch_size: int = 32, device: torch.device | str = "cpu",
                       convention: str = "standard") -> Metrics:
    """Metrics of `predict(batch) -> {task: prediction}` on every image of `dataset`."""
    accumulators = collect(predict, dataset, tasks, batch_size, device, convention)
    return {name: acc.compute() for name, acc in accumulators.items()}


def evaluate(model: torch.nn.Module, dataset: DataSet, tasks: Mapping[str, TaskSpec],
             batch_size: int = 32, device: torch.device | str = "cpu", convention: str = "standard") -> Metrics:
    """Metrics of `model` in eval mode (restored to its previous mode afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_predictor(lambda b: model(b["image"]), dataset, tasks, batch_size, device, convention)
    finally:
        model.train(was_training)


def weighted_loss(model: torch.nn.Module, dataset: DataSet, tasks: Mapping[str, TaskSpec],
                  weights: Mapping[str, float], batch_size: int = 32,
                  device: torch.device | str = "cpu") -> tuple[float, dict[str, float]]:
    """Image-weighted mean loss per task over a split, and their weighted sum (for model selection)."""
    was_training = model.training
    model.eval()
    sums = {name: 0.0 for name in tasks}
    count = 0
    try:
        with torch.no_grad():
            for batch in batches_of(dataset, batch_size):
                batch = to_device(batch, device)
                preds = model(batch["image"])
                n = batch["image"].shape[0]
                for name, spec in tasks.items():
                    sums[name] += float(spec.loss(preds[name], batch[name])) * n
                count += n
    finally:
        model.train(was_training)
    per_task = {name: s / max(count, 1) for name, s in sums.items()}
    return sum(weights.get(name, 1.0) * v for name, v in per_task.items()), per_task
