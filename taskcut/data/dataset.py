"""Reading data sets as batches: dicts keyed by task name plus `image`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import TaskcutError
from ..fileio import folder_lock
from ..tasks.dense import TaskSpec
from .cityscapes import CityscapesDataset
from .indexed import IndexedDataset, Validation
from .nyuv2 import NYUv2Dataset
from .store import load_split, read_manifest
from .taskonomy import TaskonomyDataset


class SynthDataset(Dataset):
    """One split of a synth set, held in memory in its compact stored form.

    Items and batches come out as float32 (`image` in [0,1], `normal`, `depth`, `keypoint`,
    `edge`) and int64 (`seg`, 255 = ignore).
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        with folder_lock(self.root, exclusive=False):  # a --force rewrite swaps the folder in whole
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


#: Anything `open_dataset` returns: `len`, `batch(indices)`, `tasks`, `classes`.
DataSet = Union[SynthDataset, IndexedDataset]
KINDS = ("synth", "nyuv2", "cityscapes", "taskonomy")


def iterate_batches(dataset: DataSet, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over `dataset` in batches; shuffled by `generator` when asked.

    A data set that augments (a real set's train split) draws each batch's augmentation
    from `generator` too, so a run is a function of its seed (and resumes exactly).
    """
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    augments = generator is not None and getattr(dataset, "augments", False)
    for start in range(0, stop, batch_size):
        indices = order[start:start + batch_size]
        if augments:
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
            yield dataset.batch(indices, item_rngs(seed, range(len(indices))))  # type: ignore[call-arg]
        else:
            yield dataset.batch(indices)


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A batch on `device`; values that are not tensors (a user's lists of boxes, say) pass as they are."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def batches_of(source: "DataSet | Iterable[Mapping[str, torch.Tensor]]",
               batch_size: int) -> Iterable[Mapping[str, torch.Tensor]]:
    """One pass over a taskcut data set in batches, or over a user's own iterable of dict batches
    (a DataLoader, a list), which comes in its own batch size."""
    if hasattr(source, "batch") and hasattr(source, "__len__"):
        return iterate_batches(source, batch_size)  # type: ignore[arg-type]
    return source  # type: ignore[return-value]


def item_rngs(seed: int, positions: Iterable[int]) -> list[np.random.Generator]:
    """One generator per item of a batch, from the batch's seed and the item's place in the
    global batch: the same augmentation whichever process (under torchrun) loads the item."""
    return [np.random.default_rng([seed, j]) for j in positions]


def open_dataset(spec: str, split: str, seg_classes: int | None = None,
                 crop: tuple[int, int] | None = None) -> DataSet:
    """Open `KIND:PATH[?OPTIONS]`: synth, nyuv2, cityscapes or taskonomy (a bare path means synth).

    `seg_classes` picks Cityscapes' 2/7/19-class labels; `crop` is the training crop of the
    real sets (each defaults to its papers' crop). OPTIONS (`&`-separated) say where the
    validation split of a set without `val` comes from (`Validation`): `val=carve` (default)
    or `val=test`, `val_fraction=0.1`, `val_seed=0`. They are part of the data spec, so the
    provenance of every model trained or chosen on it records them.
    """
    spec, _, options = spec.partition("?")
    kind, _, path = spec.partition(":")
    if not path:
        kind, path = "synth", spec
    validation = parse_validation(options)
    if kind == "synth":
        return SynthDataset(path, split)
    extra: dict[str, Any] = {"validation": validation} if crop is None else {"crop": tuple(crop), "validation": validation}
    if kind == "nyuv2":
        return NYUv2Dataset(path, split, **extra)
    if kind == "cityscapes":
        return CityscapesDataset(path, split, seg_classes=seg_classes or 19, **extra)
    if kind == "taskonomy":
        return TaskonomyDataset(path, split, **extra)
    raise TaskcutError(f"unknown data kind {kind!r} in {spec!r}; expected one of {', '.join(k + ':PATH' for k in KINDS)}")


def validation_source(dataset: DataSet) -> str:
    """Where a validation split's images come from, for provenance ("val", a carved part of train, or test)."""
    return str(getattr(dataset, "index_split", dataset.split))


def parse_validation(options: str) -> Validation:
    """`val=test&val_fraction=0.2` -> a `Validation`; unknown or malformed options are clear errors."""
    fields: dict[str, Any] = {}
    for item in filter(None, options.split("&")):
        key, sep, value = item.partition("=")
        try:
            if key == "val" and sep:
                fields["source"] = value
            elif key == "val_fraction" and sep:
                fields["fraction"] = float(value)
            elif key == "val_seed" and sep:
                fields["seed"] = int(value)
            else:
                raise TaskcutError(f"unknown data option {item!r}; options: val=carve|test, val_fraction=F, val_seed=N")
        except ValueError:
            raise TaskcutError(f"data option {item!r}: not a number") from None
    return Validation(**fields)


def open_for_tasks(spec: str, split: str, tasks: Mapping[str, TaskSpec],
                   crop: tuple[int, int] | None = None) -> DataSet:
    """Open a split for a model with `tasks`: the segmentation class count picks the labels, and
    a task the data has no targets for (or a class count it does not have) is a clear error."""
    seg = next((t for t in tasks.values() if t.kind == "segmentation"), None)
    dataset = open_dataset(spec, split, seg_classes=seg.channels if seg else None, crop=crop)
    missing = [t for t in tasks if t not in dataset.tasks]
    if missing:
        raise TaskcutError(f"{spec} has no targets for task(s) {', '.join(missing)}; it has {', '.join(dataset.tasks)}")
    for name, task in tasks.items():
        if task.kind == "segmentation" and task.channels != len(dataset.classes):
            raise TaskcutError(f"task {name} has {task.channels} classes but {spec} has {len(dataset.classes)}")
    return dataset


def with_class_weights(tasks: Mapping[str, TaskSpec], dataset: DataSet) -> dict[str, TaskSpec]:
    """The task specs with the data set's per-class loss weights (Taskonomy's prior factors) attached."""
    weights = getattr(dataset, "class_weights", {})
    out = {}
    for name, spec in tasks.items():
        w = weights.get(name)
        if w is not None and spec.kind == "segmentation":
            if len(w) != spec.channels:
                raise TaskcutError(f"the data's {name} class weights have {len(w)} classes, the task {spec.channels}")
            spec = replace(spec, class_weights=tuple(w))
        out[name] = spec
    return out
