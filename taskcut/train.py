"""Base training of a multi-task model: Adam on the weighted sum of task losses.

The checkpoint kept is the one with the lowest weighted validation loss; the test split is
never looked at here, so reported test figures are unbiased.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from .config import RunConfig, TrainConfig
from .data.dataset import DataSet, iterate_batches, with_class_weights
from .evaluate import weighted_loss
from .models import build_model
from .progress import progress_bar
from .tasks import TaskSpec


@dataclass
class TrainResult:
    model: nn.Module
    best_step: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(dataset: DataSet, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches (full ones only, so BatchNorm never sees a batch of one)."""
    size = min(batch_size, len(dataset))
    while True:
        yield from iterate_batches(dataset, size, shuffle=True, generator=generator, drop_last=True)


def task_losses(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                tasks: Mapping[str, TaskSpec]) -> dict[str, torch.Tensor]:
    preds = model(batch["image"])
    return {name: spec.loss(preds[name], batch[name]) for name, spec in tasks.items()}


def train(config: RunConfig, train_set: DataSet, val_set: DataSet,
          device: torch.device | str = "cpu", show_progress: bool = True) -> TrainResult:
    """Train a fresh model as `config` says and return it with its best validation weights."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).to(device)
    return fit(model, config.model.task_specs(), config.loss_weights(), config.train, train_set, val_set,
               device, show_progress, label="train")


def fit(model: nn.Module, tasks: Mapping[str, TaskSpec], weights: Mapping[str, float], cfg: TrainConfig,
        train_set: DataSet, val_set: DataSet, device: torch.device | str = "cpu",
        show_progress: bool = True, label: str = "train") -> TrainResult:
    """The one training loop (base training and fine-tuning): Adam on the weighted task losses.

    Only `tasks` are trained; masks attached to the model (parametrizations) keep pruned
    weights at zero. The returned model holds its best weights on the validation split.
    """
    torch.manual_seed(cfg.seed)
    tasks = with_class_weights(tasks, train_set)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimiser, cfg.lr_decay_every, cfg.lr_decay_rate)
                 if cfg.lr_decay_every else None)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = _batches(train_set, cfg.batch_size, generator)
    best_state, best_loss, best_step = None, float("inf"), 0
    history: list[dict[str, float]] = []
    running: dict[str, float] = {}
    start = time.perf_counter()
    model.train()
    with progress_bar(show_progress) as bar:
        job = bar.add_task(label, total=cfg.steps, info="")
        for step in range(1, cfg.steps + 1):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            losses = task_losses(model, batch, tasks)
            total = sum(weights.get(name, 1.0) * loss for name, loss in losses.items())
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            for name, loss in losses.items():
                value = float(loss.detach())
                running[name] = 0.9 * running.get(name, value) + 0.1 * value
            bar.update(job, advance=1, info=" ".join(f"{n}={v:.3f}" for n, v in running.items()))
            if step % cfg.val_every == 0 or step == cfg.steps:
                val_loss, per_task = weighted_loss(model, val_set, tasks, weights, device=device)
                history.append({"step": step, "val_loss": val_loss, **{f"val_{k}": v for k, v in per_task.items()}})
                if val_loss < best_loss:
                    best_loss, best_step = val_loss, step
                    best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_step, best_loss, history, time.perf_counter() - start)
