"""NYU-v2, 3 tasks, as AdaShare prepared it: `nyu_v2_3task.json` of (image, seg, normal, depth) groups.

Conventions kept from the papers' loader, so metrics compare with their tables:
* image PNG, read as BGR; 40 classes in an 8-bit PNG with 255 = ignore;
* normal PNG read as BGR bytes and used *as stored*: the papers normalise the raw 0-255
  vector (no mapping to [-1, 1]) and ignore pixels where a channel is 255. A model trained
  here predicts in that space, and imported checkpoints expect it;
* depth `.npy` in metres; pixels at or below 3e-5 are invalid (the papers' mask);
* the mirror augmentation leaves normals as they are, as that loader does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import as_colour, as_plane, read_npy, read_png
from .indexed import IndexedDataset, Validation

DEPTH_EPS = 3e-5


class NYUv2Dataset(IndexedDataset):
    kind = "nyuv2"
    index_name = "nyu_v2_3task.json"
    columns = ("image", "seg", "normal", "depth")

    def __init__(self, root: str | Path, split: str, crop: tuple[int, int] = (321, 321),
                 augment_train: bool = True, validation: Validation | None = None) -> None:
        super().__init__(root, split, crop, augment_train, validation)
        self.tasks = ["seg", "normal", "depth"]
        self.classes = [f"class{i}" for i in range(40)]

    def read_item(self, paths: list[Path]) -> dict[str, np.ndarray]:
        image_path, seg_path, normal_path, depth_path = paths
        image = as_colour(read_png(image_path, 3), image_path)[..., ::-1].astype(np.float32)
        seg = as_plane(read_png(seg_path, 1), seg_path).astype(np.int64)
        raw = as_colour(read_png(normal_path, 3), normal_path)[..., ::-1].astype(np.float32)
        valid = raw.max(axis=-1, keepdims=True) < 255
        norm = np.linalg.norm(raw, axis=-1, keepdims=True)
        normal = np.where(valid & (norm > 0), raw / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
        depth = as_plane(read_npy(depth_path), depth_path).astype(np.float32)
        depth = np.where(np.isfinite(depth) & (depth > DEPTH_EPS), depth, 0.0).astype(np.float32)
        return {"image": np.ascontiguousarray(image), "seg": seg, "normal": normal, "depth": depth}
