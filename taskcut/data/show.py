"""One picture of a data set item: the image and its five targets side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_path


def save_grid(sample: dict[str, torch.Tensor], classes: list[str], out: Path, title: str = "") -> Path:
    """Write a 2x3 grid (image, seg, normal / depth, keypoint, edge) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(2, 3, figsize=(11, 7.5))
    image = sample["image"].permute(1, 2, 0).numpy()
    seg = sample["seg"].numpy().astype(float)
    seg[seg == 255] = np.nan
    cmap = plt.get_cmap("tab10", max(len(classes), 1))
    panels = [
        ("image", image, {}),
        ("seg", seg, {"cmap": cmap, "vmin": -0.5, "vmax": len(classes) - 0.5, "interpolation": "nearest"}),
        ("normal (x,y,z -> r,g,b)", (sample["normal"].permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1), {}),
        ("depth", sample["depth"][0].numpy(), {"cmap": "viridis"}),
        ("keypoint", sample["keypoint"][0].numpy(), {"cmap": "magma", "vmin": 0, "vmax": 1}),
        ("edge", sample["edge"][0].numpy(), {"cmap": "gray", "vmin": 0, "vmax": 1}),
    ]
    for ax, (name, data, kwargs) in zip(axes.ravel(), panels):
        shown = ax.imshow(data, **kwargs)
        ax.set_title(name)
        ax.axis("off")
        if name == "depth":
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    axes[0, 1].legend(handles=[Patch(color=cmap(i), label=c) for i, c in enumerate(classes)],
                      loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return out
