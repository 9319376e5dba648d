"""Cityscapes as AdaShare prepared it: `cityscape.json` of (image, depth, label2, label7, label19) `.npy` groups.

Conventions kept from the papers' loader: the image array is RGB in [0, 1] and becomes BGR
0-255; labels use -1 for ignore (taskcut's 255 here); the segmentation task reads the
2-, 7- or 19-class labels by the model's class count; depth pixels at or below 3e-5 are
invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TaskcutError
from .images import as_colour, as_plane, read_npy
from .indexed import IndexedDataset, Validation
from .nyuv2 import DEPTH_EPS

LABEL_SETS = (2, 7, 19)


class CityscapesDataset(IndexedDataset):
    kind = "cityscapes"
    index_name = "cityscape.json"
    columns = ("image", "depth", "label2", "label7", "label19")

    def __init__(self, root: str | Path, split: str, crop: tuple[int, int] = (224, 224),
                 augment_train: bool = True, seg_classes: int = 19, validation: Validation | None = None) -> None:
        if seg_classes not in LABEL_SETS:
            raise TaskcutError(f"Cityscapes has 2-, 7- and 19-class labels, not {seg_classes}")
        super().__init__(root, split, crop, augment_train, validation)
        self.label_column = 2 + LABEL_SETS.index(seg_classes)
        self.tasks = ["seg", "depth"]
        self.classes = [f"class{i}" for i in range(seg_classes)]

    def read_item(self, paths: list[Path]) -> dict[str, np.ndarray]:
        image_path, depth_path = paths[0], paths[1]
        label_path = paths[self.label_column]
        image = as_colour(read_npy(image_path), image_path)[..., ::-1].astype(np.float32) * 255.0
        depth = as_plane(read_npy(depth_path), depth_path).astype(np.float32)
        depth = np.where(np.isfinite(depth) & (depth > DEPTH_EPS), depth, 0.0).astype(np.float32)
        seg = as_plane(read_npy(label_path), label_path).astype(np.int64)
        seg[seg < 0] = 255
        return {"image": np.ascontiguousarray(image), "seg": seg, "depth": depth}
