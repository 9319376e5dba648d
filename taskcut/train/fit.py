"""Base training of a multi-task model: Adam on the weighted sum of task losses.

The checkpoint kept is the one with the lowest weighted validation loss; the test split is
never looked at here, so reported test figures are unbiased.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import TrainProgress, restore, save_checkpoint
from ..config import RunConfig, TrainConfig
from ..data.dataset import to_device, DataSet, item_rngs, with_class_weights
from .distributed import all_sum, barrier, sync_batchnorm, world
from ..errors import TaskcutError
from .evaluate import weighted_loss
from ..models import build_model
from ..progress import progress_bar
from ..tasks.dense import TaskSpec
from .distill import Teacher


@dataclass
class TrainResult:
    model: nn.Module
    best_step: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class BatchStream:
    """Endless shuffled full batches (BatchNorm never sees a batch of one) whose position can be saved.

    The global batch sequence is a function of the seed alone; under torchrun each rank
    loads its share (`rank::size`) of every global batch. `state()`/`restore()` carry the
    generator, the epoch's order and the position, so a resumed run sees the same batches.
    """

    def __init__(self, dataset: DataSet, batch_size: int, seed: int) -> None:
        self.dataset = dataset
        self.size = min(batch_size, len(dataset))
        self.generator = torch.Generator().manual_seed(seed)
        self.order: torch.Tensor | None = None
        self.pos = 0
        self.augments = bool(getattr(dataset, "augments", False))

    def next(self, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        n = len(self.dataset)
        stop = n - n % self.size
        if self.order is None or self.pos + self.size > stop:
            self.order = torch.randperm(n, generator=self.generator)
            self.pos = 0
        indices = self.order[self.pos:self.pos + self.size]
        self.pos += self.size
        if not self.augments:
            return self.dataset.batch(indices[rank::world])
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
        mine = list(range(rank, len(indices), world))
        return self.dataset.batch(indices[rank::world], item_rngs(seed, mine))  # type: ignore[call-arg]

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "pos": self.pos}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"], int(state["pos"])


class IterableStream:
    """Batches from a user's own iterable (a DataLoader, a list of dict batches), cycled: each
    time it runs out it is iterated again. A one-shot iterator that runs out is a clear error.
    Its position is the count of batches taken in the current pass: a resumed run iterates the
    source again and skips that many, which gives the uninterrupted run's batches when the source
    yields the same batches in the same order each pass (a list, a data factory's splits, a
    DataLoader without shuffling)."""

    def __init__(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        self.batches = batches
        self.iterator = iter(batches)
        self.served = 0
        self.pos = 0  # batches taken in the current pass

    def next(self, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        for attempt in range(2):
            try:
                batch = next(self.iterator)
                self.served += 1
                self.pos += 1
                return dict(batch)
            except StopIteration:
                if attempt or self.iterator is self.batches:  # empty, or a one-shot iterator: it cannot restart
                    break
                self.iterator, self.pos = iter(self.batches), 0
        raise TaskcutError(f"the training batches ran out after {self.served}; give a re-iterable source (a "
                           "DataLoader or a list) or fewer steps")

    def state(self) -> dict[str, Any]:
        if self.iterator is self.batches:
            raise TaskcutError("a run over a one-shot iterator of batches cannot be checkpointed; give a re-iterable "
                               "source (a list, a DataLoader, a data factory's splits)")
        return {"served": self.served, "pos": self.pos}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.state()  # the same refusal for a one-shot source
        served, pos = int(state["served"]), int(state["pos"])
        self.iterator = iter(self.batches)
        for taken in range(pos):
            if next(self.iterator, None) is None:
                raise TaskcutError(f"the batches hold fewer than the {pos} the checkpoint had taken in this pass "
                                   f"(only {taken}): the data changed since; start over without --resume")
        self.served, self.pos = served, pos


def task_losses(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                tasks: Mapping[str, TaskSpec], teacher: "Teacher | None" = None) -> dict[str, torch.Tensor]:
    """Each task's label loss; with a teacher, its distillation terms too (keys `distill:TASK`)."""
    preds = model(batch["image"])
    losses = {name: spec.loss(preds[name], batch[name]) for name, spec in tasks.items()}
    if teacher is not None:
        losses.update({f"{DISTILL}{name}": loss for name, loss in teacher.losses(batch["image"], preds).items()})
    return losses


#: Prefix of the distillation terms among a step's losses; each counts with its task's loss weight.
DISTILL = "distill:"


def _weight(weights: Mapping[str, float], name: str) -> float:
    return weights.get(name.removeprefix(DISTILL), 1.0)


def train(config: RunConfig, train_set: DataSet, val_set: DataSet,
          device: torch.device | str = "cpu", show_progress: bool = True, checkpoint: Path | None = None,
          checkpoint_every: int = 0, resume: bool = False) -> TrainResult:
    """Train a fresh model as `config` says and return it with its best validation weights."""
    if config.train.distill is not None:
        raise TaskcutError("distill: is for fine-tuning (the dense model teaches a compact one); "
                           "a base model has no teacher")
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).to(device)
    return fit(model, config.model.task_specs(), config.loss_weights(), config.train, train_set, val_set,
               device, show_progress, label="train", checkpoint=checkpoint, checkpoint_every=checkpoint_every,
               resume=resume)


def fit(model: nn.Module, tasks: Mapping[str, TaskSpec], weights: Mapping[str, float], cfg: TrainConfig,
        train_set: DataSet | IterableStream, val_set: DataSet | Iterable[Mapping[str, torch.Tensor]] | None,
        device: torch.device | str = "cpu",
        show_progress: bool = True, label: str = "train", checkpoint: Path | None = None,
        checkpoint_every: int = 0, resume: bool = False, teacher: "Teacher | None" = None) -> TrainResult:
    """The one training loop (base training and fine-tuning): Adam on the weighted task losses.

    Only `tasks` are trained; masks attached to the model (parametrizations) keep pruned
    weights at zero. The returned model holds its best weights on the validation split.

    With `checkpoint`, everything the run depends on (weights and masks, optimiser, schedule,
    random states, data position, best weights so far) is written there atomically every
    `checkpoint_every` steps; `resume` continues from it, reproducing the uninterrupted run.
    A non-finite loss stops the run before the step is applied (no NaN weights), naming the
    task and the step; the last checkpoint stays as it was. Under torchrun each rank trains on
    its share of every global batch (DDP, BatchNorm statistics shared); rank 0 writes.
    `train_set` may be an `IterableStream` over a user's own batches, and `val_set` any
    re-iterable of batches, or None: then nothing is chosen and the last weights are kept.
    With `cfg.distill`, `teacher` (the dense model on the same tasks) adds its distillation
    terms to every step; the weights are still chosen on the label loss of validation.
    """
    place = world()
    if cfg.batch_size % place.size:
        raise TaskcutError(f"batch size {cfg.batch_size} does not split over {place.size} processes")
    if (cfg.distill is None) != (teacher is None):
        raise TaskcutError("distillation needs both a schedule with distill: and a teacher model"
                           if teacher is None else "a teacher was given but the schedule has no distill: settings")
    torch.manual_seed(cfg.seed)
    tasks = with_class_weights(tasks, train_set)
    # fused: one kernel for every parameter's update (1.3 ms a step against 4.6 ms for the per-tensor loop
    # PyTorch picks on CPU, synth-tiny); the same rule, rounded differently
    fused = torch.device(device).type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in model.parameters())
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimiser, cfg.lr_decay_every, cfg.lr_decay_rate)
                 if cfg.lr_decay_every else None)
    stream = train_set if isinstance(train_set, IterableStream) else BatchStream(train_set, cfg.batch_size, cfg.seed)
    progress = TrainProgress()
    # the optimiser's kind is part of what a checkpoint continues: one written with another (an older
    # version's per-tensor Adam) is refused like one of other settings, not resumed with a different rule
    settings = {"label": label, "train": cfg.model_dump(), "tasks": sorted(tasks),
                "optimiser": "adam-fused" if fused else "adam"}
    if resume:
        if checkpoint is None or not checkpoint.is_file():
            raise TaskcutError(f"--resume: no checkpoint at {checkpoint}")
        progress = restore(checkpoint, settings, model, optimiser, scheduler, stream)
    net: nn.Module = model
    if place.size > 1:
        sync_batchnorm(model, True)
        dev = torch.device(device)
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    running: dict[str, float] = {}
    start = time.perf_counter() - progress.seconds
    model.train()
    if teacher is not None:
        teacher.attach(model)
    try:
        with progress_bar(show_progress and place.main) as bar:
            job = bar.add_task(label, total=cfg.steps, completed=progress.step, info="")
            for step in range(progress.step + 1, cfg.steps + 1):
                batch = to_device(stream.next(place.rank, place.size), device)
                losses = task_losses(net, batch, tasks, teacher)
                _stop_if_not_finite(losses, step, checkpoint, progress, device)
                total = sum(_weight(weights, name) * loss for name, loss in losses.items())
                optimiser.zero_grad(set_to_none=True)
                total.backward()
                optimiser.step()
                if scheduler is not None:
                    scheduler.step()
                for name, loss in losses.items():
                    value = float(loss.detach())
                    running[name] = 0.9 * running.get(name, value) + 0.1 * value
                bar.update(job, advance=1, info=" ".join(f"{n}={v:.3f}" for n, v in running.items()))
                if val_set is None and step == cfg.steps:
                    progress.best_step, progress.best_state = step, copy.deepcopy(model.state_dict())
                elif val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                    val_loss, per_task = weighted_loss(model, val_set, tasks, weights, device=device)
                    progress.history.append({"step": step, "val_loss": val_loss,
                                             **{f"val_{k}": v for k, v in per_task.items()}})
                    if val_loss < progress.best_loss:
                        progress.best_loss, progress.best_step = val_loss, step
                        progress.best_state = copy.deepcopy(model.state_dict())
                progress.step = step
                if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step < cfg.steps:
                    progress.seconds = time.perf_counter() - start
                    if place.main:
                        save_checkpoint(checkpoint, settings, model, optimiser, scheduler, stream, progress)
                    barrier()
    finally:
        if teacher is not None:
            teacher.detach()
        if place.size > 1:
            sync_batchnorm(model, False)
    assert progress.best_state is not None
    model.load_state_dict(progress.best_state)
    model.eval()
    return TrainResult(model, progress.best_step, progress.best_loss, progress.history, time.perf_counter() - start)


def _stop_if_not_finite(losses: Mapping[str, torch.Tensor], step: int, checkpoint: Path | None,
                        progress: "TrainProgress", device: torch.device | str) -> None:
    """Every rank stops together, before the step is applied, naming the task(s) whose loss is not finite."""
    flags = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0 for loss in losses.values()],
                         device=device)
    bad = [name for name, flag in zip(losses, all_sum(flags).tolist()) if flag > 0]
    if not bad:
        return
    kept = (f"the last good checkpoint, {checkpoint} (step {progress.saved_step}), is kept; --resume continues from it"
            if checkpoint is not None and progress.saved_step else "no weights were written")
    raise TaskcutError(f"non-finite {', '.join(bad)} loss at step {step}; stopped before applying it: {kept}. "
                       f"Lower the learning rate or check the data.")
