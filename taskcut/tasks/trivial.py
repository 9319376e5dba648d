"""What a predictor that ignores the image scores: the floor a trained model must clear.

Statistics come from the training split and are judged on the evaluation split, so the
comparison with a trained model is fair. Reported beside every base model's metrics.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..data.dataset import SynthDataset
from ..train.evaluate import Metrics, evaluate_predictor
from .dense import TaskSpec
from .kinds import kind_of


def _constant(batch: dict[str, torch.Tensor], value: torch.Tensor) -> torch.Tensor:
    b = batch["image"].shape[0]
    h, w = batch["image"].shape[-2:]
    if value.dim() == 1:
        return value.view(1, -1, 1, 1).expand(b, -1, h, w)
    return value.unsqueeze(0).expand(b, *value.shape)


def trivial_metrics(train: SynthDataset, split: SynthDataset, tasks: Mapping[str, TaskSpec]) -> dict[str, Metrics]:
    """Metrics of the image-blind predictors on `split`, keyed by predictor name then task: each kind's
    (`Kind.blind_predictors`), e.g. `most_frequent_class` (seg), `mean_normal`, `mean_depth`, `zeros`
    (keypoint, edge): one constant for every pixel; `mean_depth_map`: the training set's per-pixel
    mean depth, a predictor that knows the typical room layout but not this image.
    """
    out: dict[str, Metrics] = {}
    for name, spec in tasks.items():
        target = train.array(name)
        predictors = kind_of(spec.kind).blind_predictors(spec, target)
        for pname, value in predictors.items():
            metrics = evaluate_predictor(lambda b, v=value, n=name: {n: _constant(b, v)}, split, {name: spec})
            out.setdefault(pname, {})[name] = metrics[name]
    return out
