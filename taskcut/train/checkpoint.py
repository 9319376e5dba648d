"""Resumable training state: one file, written atomically, read without executing code.

A checkpoint holds what the next step depends on: weights (masks included, as buffers of
their parametrizations), the optimiser and learning-rate schedule, the random states
(PyTorch's global one, for dropout, and the data stream's), the data position, the step,
and the best validation weights so far. It is a `torch.save` file of tensors and plain
containers only, so `torch.load(weights_only=True)` reads it back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import TaskcutError
from ..fileio import atomic_path

FORMAT = "taskcut-train-checkpoint"


@dataclass
class TrainProgress:
    step: int = 0
    best_loss: float = float("inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    saved_step: int = 0


def checkpoint_path(out: Path) -> Path:
    """Where the run that writes `out` keeps its checkpoint: `out` + `.ckpt`, beside it."""
    return out.with_name(out.name + ".ckpt")


def save_checkpoint(path: Path, settings: Mapping[str, Any], model: nn.Module, optimiser: torch.optim.Optimizer,
                    scheduler: Any, stream: Any, progress: TrainProgress) -> None:
    progress.saved_step = progress.step
    state = {
        "format": FORMAT, "settings": dict(settings), "model": model.state_dict(), "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "stream": stream.state(), "step": progress.step, "best_loss": progress.best_loss,
        "best_step": progress.best_step, "best_state": progress.best_state, "history": progress.history,
        "seconds": progress.seconds,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def restore(path: Path, settings: Mapping[str, Any], model: nn.Module, optimiser: torch.optim.Optimizer,
            scheduler: Any, stream: Any) -> TrainProgress:
    """Load `path` into the run's objects; refuse a checkpoint of another run or a damaged file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file cannot be trusted
        raise TaskcutError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TaskcutError(f"{path} is not a taskcut training checkpoint")
    if state["settings"] != dict(settings):
        raise TaskcutError(f"checkpoint {path} was written by a run with other settings "
                           f"({state['settings']}); resume with the same command or delete it")
    device = next(model.parameters()).device
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    stream.restore(state["stream"])
    best = state["best_state"]
    return TrainProgress(step=int(state["step"]), best_loss=float(state["best_loss"]),
                         best_step=int(state["best_step"]),
                         best_state={k: v.to(device) for k, v in best.items()} if best is not None else None,
                         history=copy.deepcopy(state["history"]), seconds=float(state["seconds"]),
                         saved_step=int(state["step"]))
