"""Tiny-Taskonomy as AdaShare prepared it: `taskonomy.json` of (image, seg, normal, depth, keypoint, edge)
PNG groups, and `semseg_prior_factor.npy` (per-class weights of the segmentation loss).

Conventions kept from the papers' loader: everything is resized to 256x256 by nearest
neighbour; the image is BGR 0-255; segmentation label 0 (unlabelled) is merged into class 0
and labels shift down by one (17 classes); normals map from [0, 255] to [-1, 1]; depth is
log(1 + d) / log(2^16) of the 16-bit value and invalid where the raw value is 64500 or more;
normals share that mask; keypoints clip to [0, 0.005] and edges to [0, 0.08] of the 16-bit
range, then map to [-1, 1]; mirroring negates the normals' x component.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TaskcutError
from .augment import resize
from .images import as_colour, as_plane, read_npy, read_png
from .indexed import IndexedDataset, Validation

SIZE = (256, 256)
DEPTH_LIMIT = 64500
SEG_CLASSES = 17


def _rescale(x: np.ndarray, top: float) -> np.ndarray:
    return (np.clip(x, 0.0, top) / top * 2.0 - 1.0).astype(np.float32)


class TaskonomyDataset(IndexedDataset):
    kind = "taskonomy"
    index_name = "taskonomy.json"
    columns = ("image", "seg", "normal", "depth", "keypoint", "edge")
    flips_normal_x = True

    def __init__(self, root: str | Path, split: str, crop: tuple[int, int] = (224, 224),
                 augment_train: bool = True, validation: Validation | None = None) -> None:
        super().__init__(root, split, crop, augment_train, validation)
        self.tasks = ["seg", "normal", "depth", "keypoint", "edge"]
        self.classes = [f"class{i}" for i in range(SEG_CLASSES)]
        prior = self.root / "semseg_prior_factor.npy"
        if not prior.is_file():
            raise TaskcutError(f"{self.root} has no semseg_prior_factor.npy (the segmentation class weights)")
        weights = read_npy(prior).astype(np.float64).ravel()
        if weights.size != SEG_CLASSES or not np.all(np.isfinite(weights)):
            raise TaskcutError(f"{prior}: expected {SEG_CLASSES} finite class weights, got {weights.size}")
        self.class_weights = {"seg": tuple(float(w) for w in weights)}

    def read_item(self, paths: list[Path]) -> dict[str, np.ndarray]:
        image_path, seg_path, normal_path, depth_path, keypoint_path, edge_path = paths
        image = as_colour(read_png(image_path, 3), image_path)[..., ::-1].astype(np.float32)
        seg = as_plane(read_png(seg_path, 1), seg_path).astype(np.int64)
        normal = as_colour(read_png(normal_path, 3), normal_path).astype(np.float32) / 255.0
        raw_depth = as_plane(read_png(depth_path, 1), depth_path).astype(np.float32)
        keypoint = as_plane(read_png(keypoint_path, 1), keypoint_path).astype(np.float32) / 2 ** 16
        edge = as_plane(read_png(edge_path, 1), edge_path).astype(np.float32) / 2 ** 16

        image = resize(image, SIZE, bilinear=False)
        seg = np.maximum(resize(seg, SIZE, bilinear=False), 1) - 1
        valid = resize((raw_depth < DEPTH_LIMIT).astype(np.float32), SIZE, bilinear=False) > 0.99
        depth = resize(np.log1p(raw_depth) / np.log(2.0 ** 16), SIZE, bilinear=False)
        normal = resize(normal, SIZE, bilinear=False) * 2.0 - 1.0
        return {
            "image": np.ascontiguousarray(image),
            "seg": seg,
            "normal": np.where(valid[..., None], normal, 0.0).astype(np.float32),
            "depth": np.where(valid, depth, 0.0).astype(np.float32),
            "keypoint": _rescale(resize(keypoint, SIZE, bilinear=False), 0.005),
            "edge": _rescale(resize(edge, SIZE, bilinear=False), 0.08),
        }
