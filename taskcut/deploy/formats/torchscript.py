"""TorchScript (.pt), kept for LibTorch C++ apps that already load it; PyTorch no longer develops it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def write(wrapper: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None, path: Path,
          tasks: list[str]) -> None:
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(wrapper, example[:1]), str(path))


def open_runner(path: Path, threads: int | None = None,
                tasks: list[str] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    module = torch.jit.load(str(path))

    def run(images: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in module(torch.from_numpy(images))]

    return run
