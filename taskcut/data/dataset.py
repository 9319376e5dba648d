"""Reading data sets as batches: dicts keyed by task name plus `image`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import TaskcutError
from .store import load_split, read_manifest


class SynthDataset(Dataset):
    """One split of a synth set, held in memory in its compact stored form.

    Items and batches come out as float32 (`image` in [0,1], `normal`, `depth`, `keypoint`,
    `edge`) and int64 (`seg`, 255 = ignore).
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        self._arrays = {k: torch.from_numpy(v) for k, v in load_split(self.root, split).items()}
        self.tasks: list[str] = list(self.manifest["tasks"])
        self.classes: list[str] = list(self.manifest["classes"])

    def __len__(self) -> int:
        return int(self._arrays["image"].shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.batch(torch.tensor([index]))
        return {k: v[0] for k, v in batch.items()}

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Several items at once, already stacked: much cheaper than collating one by one."""
        a = self._arrays
        out = {"image": a["image"][indices].to(torch.float32) / 255.0, "seg": a["seg"][indices].to(torch.int64)}
        for key in ("normal", "depth", "keypoint", "edge"):
            out[key] = a[key][indices].to(torch.float32)
        return out

    def array(self, key: str) -> np.ndarray:
        """A whole stored array (for statistics over a split), in float32 / int64."""
        return self.batch(torch.arange(len(self)))[key].numpy()


def iterate_batches(dataset: SynthDataset, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over `dataset` in batches; shuffled by `generator` when asked."""
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield dataset.batch(order[start:start + batch_size])


def open_dataset(spec: str, split: str) -> SynthDataset:
    """Open `KIND:PATH` (for now `synth:DIR`; a bare path means synth)."""
    kind, _, path = spec.partition(":")
    if not path:
        kind, path = "synth", spec
    if kind == "synth":
        return SynthDataset(path, split)
    if kind in ("nyuv2", "cityscapes", "taskonomy"):
        raise TaskcutError(f"the {kind} loader is not available in this version; use --data synth:DIR")
    raise TaskcutError(f"unknown data kind {kind!r} in {spec!r}; expected synth:DIR")
