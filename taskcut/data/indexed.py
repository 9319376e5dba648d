"""Data sets in the AdaShare/DiSparse/CUT on-disk layout: a JSON index of file groups per split.

Each loader (NYU-v2, Cityscapes, Tiny-Taskonomy) only says how one group of files becomes
arrays; opening the index, checking that every file is there, batching, augmentation and the
hand-over as tensors are shared here. Items come out like the synth set's: `image` plus one
target per task, with invalid pixels encoded in the target itself (segmentation 255, normal
a zero vector, depth 0, keypoint/edge NaN), which is what `taskcut.tasks.valid_mask` reads.

Images are what the papers' models expect: BGR, 0-255, minus the ImageNet/Caffe mean, so a
checkpoint imported from those projects sees the same input it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import TaskcutError
from ..fileio import inside
from .augment import Augment, augment
from .store import read_folder_json

#: The papers' image mean, BGR order, on the 0-255 scale.
BGR_MEAN = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)


@dataclass(frozen=True)
class Validation:
    """Where the validation split of a data set without `val` comes from (NYU-v2 and Cityscapes here).

    `carve` (default): a seeded `fraction` of `train`, at least one image, never trained on:
    the train split then holds the rest. `test`: validate on the test split, as the papers'
    code does; model selection then sees the test split, so it is only done when asked for
    (`?val=test` after the data path), with a warning, and recorded in the output's provenance.
    """

    source: str = "carve"
    fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("carve", "test"):
            raise TaskcutError(f"val={self.source!r}: expected carve (a part of train) or test")
        if not 0.0 < self.fraction < 1.0:
            raise TaskcutError(f"val_fraction must be in (0, 1), got {self.fraction}")


class IndexedDataset(Dataset):
    """One split of a data set described by `<root>/<index_name>` (`{split: [[file, ...], ...]}`)."""

    kind: ClassVar[str]
    index_name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    flips_normal_x: ClassVar[bool] = False
    tasks: list[str]
    classes: list[str]

    def __init__(self, root: str | Path, split: str, crop: tuple[int, int], augment_train: bool = True,
                 validation: Validation | None = None) -> None:
        self.root = Path(root)
        self.split = split
        groups, self.index_split = read_index(self.root, self.index_name, split, len(self.columns),
                                              validation or Validation())
        check_files(self.root, groups, self.index_name, self.index_split)
        self.groups = groups
        self.augmentation = Augment(tuple(crop), flip_normal_x=self.flips_normal_x) \
            if augment_train and split == "train" else None
        self.class_weights: dict[str, tuple[float, ...]] = {}

    @property
    def augments(self) -> bool:
        return self.augmentation is not None

    def __len__(self) -> int:
        return len(self.groups)

    def read_item(self, paths: list[Path]) -> dict[str, np.ndarray]:
        """Arrays of one group: `image` (H, W, 3) BGR 0-255 float32 and targets keyed by task."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.batch(torch.tensor([index]))
        return {k: v[0] for k, v in batch.items()}

    def batch(self, indices: torch.Tensor,
              rngs: Sequence[np.random.Generator] | None = None) -> dict[str, torch.Tensor]:
        """Items stacked; the train split is augmented when given one random generator per item."""
        items = []
        if rngs is not None and len(rngs) != len(indices):
            raise ValueError(f"{len(rngs)} random generators for {len(indices)} items")
        for j, i in enumerate(indices.tolist()):
            paths = [self.root / p for p in self.groups[i]]
            item = self.read_item(paths)
            if self.augmentation is not None and rngs is not None:
                item = augment(item, self.augmentation, rngs[j])
            shape = item["image"].shape[:2]
            for key, value in item.items():
                if value.shape[:2] != shape:
                    raise TaskcutError(f"{paths[0]}: its {key} is {value.shape[0]}x{value.shape[1]} "
                                       f"but the image is {shape[0]}x{shape[1]}")
            items.append((item, paths[0]))
        first, first_path = items[0]
        for item, path in items[1:]:
            if item["image"].shape != first["image"].shape:
                raise TaskcutError(f"{path}: image is {item['image'].shape[0]}x{item['image'].shape[1]} but "
                                   f"{first_path} is {first['image'].shape[0]}x{first['image'].shape[1]}; "
                                   f"a {self.split} batch needs one size")
        out = {"image": torch.from_numpy(np.stack([(it["image"] - BGR_MEAN) for it, _ in items]))
               .permute(0, 3, 1, 2).to(torch.float32).contiguous()}
        for key in first:
            if key == "image":
                continue
            stacked = torch.from_numpy(np.stack([it[key] for it, _ in items]))
            if key == "seg":
                out[key] = stacked.to(torch.int64)
            elif stacked.dim() == 4:
                out[key] = stacked.permute(0, 3, 1, 2).to(torch.float32).contiguous()
            else:
                out[key] = stacked.unsqueeze(1).to(torch.float32)
        return out

    def array(self, key: str) -> np.ndarray:
        raise TaskcutError(f"{self.kind}: whole-split arrays are only kept for synth sets")


def read_index(root: Path, name: str, split: str, columns: int,
               validation: Validation = Validation()) -> tuple[list[list[str]], str]:
    """The file groups of `split`, and where they come from.

    An index without `val` gets one as `validation` says: carved out of `train` (the train
    split then loses those images) or, only when asked for, the test split.
    """
    path = root / name
    index = read_folder_json(root, name, f"expected the AdaShare layout ({name} beside the data)", kind="index file ")
    if not isinstance(index, dict):
        raise TaskcutError(f"{path} must map split names to lists of file groups")
    carving = split in ("train", "val") and "val" not in index and validation.source == "carve"
    if split == "val" and "val" not in index and validation.source == "test":
        from ..progress import console

        console.print(f"[yellow]warning:[/yellow] {path} has no val split and val=test was asked for: the best "
                      "checkpoint is chosen on the test split, so test figures are optimistic", highlight=False,
                      soft_wrap=True)
        used = "test" if "test" in index else None
    else:
        used = "train" if carving else (split if split in index else None)
    if used is None:
        raise TaskcutError(f"{path} has no {split!r} split; it has {', '.join(sorted(index)) or 'none'}")
    groups = index[used]
    if not isinstance(groups, list) or not groups:
        raise TaskcutError(f"{path}: split {used!r} is empty or not a list")
    for i, group in enumerate(groups):
        if not (isinstance(group, list) and len(group) == columns and all(isinstance(p, str) for p in group)):
            raise TaskcutError(f"{path}: {used}[{i}] should be a list of {columns} file paths, got {group!r}"[:300])
    if not carving:
        return groups, used
    n_val = max(1, round(validation.fraction * len(groups)))
    if n_val >= len(groups):
        raise TaskcutError(f"{path}: train holds {len(groups)} group(s), too few to carve a validation split of "
                           f"{validation.fraction:g} from; add a val split or give ?val=test")
    carved = set(np.random.default_rng(validation.seed).permutation(len(groups))[:n_val].tolist())
    source = f"train (val carved: {n_val} of {len(groups)}, fraction {validation.fraction:g}, seed {validation.seed})"
    keep = (lambda i: i in carved) if split == "val" else (lambda i: i not in carved)
    return [g for i, g in enumerate(groups) if keep(i)], source


def check_files(root: Path, groups: list[list[str]], index_name: str, split: str) -> None:
    """Every file the split names must exist; the error names the first missing one and the count."""
    missing = [p for group in groups for p in group if not inside(root, p, f"{root / index_name}").is_file()]
    if missing:
        raise TaskcutError(f"{root / index_name} names {len(missing)} missing file(s) in split {split!r}, "
                           f"the first: {root / missing[0]}")
