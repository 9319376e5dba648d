"""Running under `torchrun`: process group, who writes, and the collective sums taskcut needs.

The same command works with and without torchrun. Under torchrun (WORLD_SIZE > 1) the
process group starts with NCCL on GPUs and Gloo on CPUs; only rank 0 writes files and
shows progress; training splits each global batch across ranks; scoring shares whole
batches and sums the per-task scores. Without torchrun every helper is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import TaskcutError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


#: Seconds a collective waits for the other ranks before the run ends with an error
#: (`TASKCUT_DIST_TIMEOUT`): a stalled or stopped rank must not block the others for ever.
DEFAULT_TIMEOUT = 600


def timeout() -> datetime.timedelta:
    text = os.environ.get("TASKCUT_DIST_TIMEOUT", str(DEFAULT_TIMEOUT))
    try:
        seconds = float(text)
    except ValueError:
        raise TaskcutError(f"TASKCUT_DIST_TIMEOUT must be a number of seconds, got {text!r}") from None
    if not 0 < seconds <= 86400:
        raise TaskcutError(f"TASKCUT_DIST_TIMEOUT must be in (0, 86400] seconds, got {text}")
    return datetime.timedelta(seconds=seconds)


def init(device: str) -> str:
    """Join the torchrun job if there is one; the device this rank should use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise TaskcutError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    dev = torch.device(device)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", timeout=timeout())
        return f"cuda:{local}"
    dist.init_process_group("gloo", timeout=timeout())
    return device


def shutdown() -> None:
    """Leave the process group together: a rank that tore it down while another was still writing
    aborted now and then (gloo with a timeout set), so every rank first waits for the others."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (and returned)."""
    if world().size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is true on some rank (a stop decision all ranks must share)."""
    if world().size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_sum(t).item() > 0)


class _AllSum(torch.autograd.Function):
    """All-reduce sum whose backward is the all-reduce sum of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class RankSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics span every rank's images (Gloo and NCCL alike).

    PyTorch's SyncBatchNorm runs on GPUs only; without synchronised statistics, N processes
    with B images each would not train like one process with N*B images.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world().size == 1:
            return super().forward(x)
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        stats = _AllSum.apply(stats)
        c = self.num_features
        n = stats[-1].detach()
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach() * m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
        y = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def sync_batchnorm(model: nn.Module, enable: bool) -> None:
    """Make BatchNorm layers share statistics across ranks (or back to plain), in place.

    The class of each BatchNorm2d is switched to `RankSyncBatchNorm`, which holds the same
    state under the same names, so saving, loading and checkpoints are unaffected.
    """
    for module in model.modules():
        if type(module) is nn.BatchNorm2d and enable:
            module.__class__ = RankSyncBatchNorm
        elif type(module) is RankSyncBatchNorm and not enable:
            module.__class__ = nn.BatchNorm2d
