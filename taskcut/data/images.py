"""Reading the files of the public data sets without executing code, with errors that name the file.

PNG through Pillow (8-bit, 16-bit and colour images keep their stored values); NumPy arrays
with `allow_pickle=False`, so an `.npy` holding Python objects is refused rather than run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import TaskcutError


def read_png(path: Path, channels: int) -> np.ndarray:
    """An image as stored: (H, W) for `channels=1`, (H, W, 3) in file order (RGB) for 3."""
    try:
        with Image.open(path) as img:
            img.load()
            if channels == 3:
                if img.mode != "RGB":
                    raise TaskcutError(f"{path}: expected a 3-channel RGB image, got mode {img.mode}")
                array = np.asarray(img)
            else:
                array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise TaskcutError(f"{path}: cannot read the image ({exc})") from exc
    if channels == 1 and array.ndim != 2:
        raise TaskcutError(f"{path}: expected a one-channel image, got shape {tuple(array.shape)}")
    return array


def read_npy(path: Path) -> np.ndarray:
    """A stored NumPy array; object arrays (which unpickle) are refused."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise TaskcutError(f"{path}: refused or unreadable NumPy file ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise TaskcutError(f"{path}: cannot read the NumPy file ({exc})") from exc


def as_plane(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) from (H, W) or (H, W, 1): label and depth files come both ways."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise TaskcutError(f"{path}: expected a single-channel (H, W) array, got shape {tuple(array.shape)}")
    return array


def as_colour(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3 or array.shape[-1] != 3:
        raise TaskcutError(f"{path}: expected a 3-channel (H, W, 3) image, got shape {tuple(array.shape)}")
    return array
