"""The papers' training augmentation: random scale (0.5 to 1.5), mirror, then crop and pad.

As in the AdaShare/DiSparse/CUT loaders: the image is resized bilinearly and every target
by nearest neighbour (labels must not blend); a mirrored image may also negate the x
component of its normals (Taskonomy does; AdaShare's NYU-v2 loader does not); images
smaller than the crop are padded around the centre, then a random window is cut.
Padding is marked invalid in every target (ignore label, zero normal, zero depth, NaN
maps), so padded pixels never count in a loss. Evaluation uses none of this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: What padding holds, per array kind: invalid for every target.
PAD_VALUE = {"image": 0.0, "seg": 255, "normal": 0.0, "depth": 0.0, "keypoint": float("nan"), "edge": float("nan")}


@dataclass(frozen=True)
class Augment:
    crop: tuple[int, int]
    min_scale: float = 0.5
    max_scale: float = 1.5
    flip_normal_x: bool = False


def resize(array: np.ndarray, size: tuple[int, int], bilinear: bool) -> np.ndarray:
    """(H, W) or (H, W, C) to `size`; bilinear without corner alignment, or nearest."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    planar = t.dim() == 2
    t = t.unsqueeze(-1) if planar else t
    dtype = t.dtype
    t = t.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False) if bilinear else \
        F.interpolate(t, size=size, mode="nearest")
    out = t[0].permute(1, 2, 0).to(dtype).numpy()
    return out[..., 0] if planar else out


def augment(item: dict[str, np.ndarray], aug: Augment, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One training item (arrays keyed `image` and task kinds, HW or HWC) after scale, mirror, crop."""
    h, w = item["image"].shape[:2]
    scale = rng.uniform(aug.min_scale, aug.max_scale)
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    out = {k: resize(v, size, bilinear=(k == "image")) for k, v in item.items()}
    if rng.random() > 0.5:
        out = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in out.items()}
        if aug.flip_normal_x and "normal" in out:
            out["normal"][..., 0] *= -1
    ch, cw = aug.crop
    ph, pw = max(size[0], ch), max(size[1], cw)
    top, left = (ph - size[0]) // 2, (pw - size[1]) // 2
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    cropped = {}
    for key, value in out.items():
        padded = np.full((ph, pw) + value.shape[2:], PAD_VALUE[key], dtype=value.dtype)
        padded[top:top + size[0], left:left + size[1]] = value
        cropped[key] = padded[y0:y0 + ch, x0:x0 + cw]
    return cropped
