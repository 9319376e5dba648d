"""Tiny data sets in the AdaShare/DiSparse/CUT on-disk layouts, written in the real file formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 40, 48


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.name


def _npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def write_nyuv2(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    index: dict[str, list[list[str]]] = {}
    for split, n in counts.items():
        index[split] = []
        for i in range(n):
            name = f"{split}{i}"
            _png(root / "img" / f"{name}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            seg = rng.integers(0, 40, (H, W), dtype=np.uint8)
            seg[:3] = 255
            _png(root / "seg" / f"{name}.png", seg)
            normal = rng.integers(1, 255, (H, W, 3), dtype=np.uint8)
            normal[:, :2] = 255
            _png(root / "normal_mask" / f"{name}.png", normal)
            depth = rng.uniform(0.5, 10.0, (H, W)).astype(np.float32)
            depth[-2:] = 0.0
            _npy(root / "depth" / f"{name}.npy", depth)
            index[split].append([f"img/{name}.png", f"seg/{name}.png", f"normal_mask/{name}.png", f"depth/{name}.npy"])
    (root / "nyu_v2_3task.json").write_text(json.dumps(index))
    return root


def write_cityscapes(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    index: dict[str, list[list[str]]] = {}
    for split, n in counts.items():
        index[split] = []
        for i in range(n):
            name = f"{split}{i}"
            _npy(root / "image" / f"{name}.npy", rng.uniform(0, 1, (H, W, 3)).astype(np.float32))
            depth = rng.uniform(0.01, 1.0, (H, W, 1)).astype(np.float32)
            depth[:2] = 0.0
            _npy(root / "depth" / f"{name}.npy", depth)
            group = [f"image/{name}.npy", f"depth/{name}.npy"]
            for classes in (2, 7, 19):
                label = rng.integers(0, classes, (H, W)).astype(np.float32)
                label[:, :3] = -1
                _npy(root / f"label_{classes}" / f"{name}.npy", label)
                group.append(f"label_{classes}/{name}.npy")
            index[split].append(group)
    (root / "cityscape.json").write_text(json.dumps(index))
    return root


def write_taskonomy(root: Path, counts: dict[str, int], seed: int = 0, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    index: dict[str, list[list[str]]] = {}
    for split, n in counts.items():
        index[split] = []
        for i in range(n):
            name = f"{split}{i}"
            group = [f"rgb/{name}.png", f"segment_semantic/{name}.png", f"normal/{name}.png",
                     f"depth_zbuffer/{name}.png", f"keypoints2d/{name}.png", f"edge_texture/{name}.png"]
            _png(root / group[0], rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            _png(root / group[1], rng.integers(0, 18, (size, size), dtype=np.uint8))
            _png(root / group[2], rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            depth = rng.integers(100, 60000, (size, size)).astype(np.uint16)
            depth[:4] = 65535
            _png(root / group[3], depth)
            _png(root / group[4], rng.integers(0, 600, (size, size)).astype(np.uint16))
            _png(root / group[5], rng.integers(0, 8000, (size, size)).astype(np.uint16))
            index[split].append(group)
    np.save(root / "semseg_prior_factor.npy", rng.uniform(0.5, 2.0, 17))
    (root / "taskonomy.json").write_text(json.dumps(index))
    return root
