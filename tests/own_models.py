"""Own multi-task models that are not in the zoo, built by factories as a user's package would.

Each factory takes only JSON keyword arguments, so `taskcut.save` can record it and
`taskcut.load` can rebuild the model by calling it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGE = 32


class FPN(nn.Module):
    """A three-stage CNN encoder, a top-down FPN neck shared by the dense tasks, heads in a ModuleDict."""

    def __init__(self, width: int = 8, classes: int = 6) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU())
        self.lateral = nn.ModuleList([nn.Conv2d(c, 2 * w, 1) for c in (w, 2 * w, 4 * w)])
        self.smooth = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.heads = nn.ModuleDict({
            "seg": nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, classes, 1)),
            "depth": nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 1)),
            "normal": nn.Conv2d(2 * w, 3, 1),
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c1 = self.stem(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        p = self.lateral[2](c3)
        p = self.lateral[1](c2) + F.interpolate(p, size=c2.shape[-2:], mode="nearest")
        p = self.lateral[0](c1) + F.interpolate(p, size=c1.shape[-2:], mode="nearest")
        p = F.relu(self.smooth(p))
        return {task: head(p) for task, head in self.heads.items()}


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A ViT-style encoder with multi-head attention; a dense head on the patch tokens, a classifier on the mean."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 8, classes: int = 6,
                 scenes: int = 7) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (IMAGE // patch) ** 2, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(dim, classes, 1), "scene": nn.Linear(dim, scenes)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.patch(x)
        b, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            t = block(t)
        t = self.norm(t)
        grid = t.transpose(1, 2).reshape(b, c, h, w)
        return {"seg": self.heads["seg"](grid), "scene": self.heads["scene"](t.mean(dim=1))}


class Sliced(nn.Module):
    """One output conv whose channels the forward slices into tasks."""

    def __init__(self, width: int = 24, classes: int = 6) -> None:
        super().__init__()
        self.classes = classes
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(width, classes + 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.out(self.trunk(x))
        return {"seg": o[:, :self.classes], "depth": o[:, self.classes:]}


class Tagger(nn.Module):
    """An image-level multi-label classifier and a dense task on one CNN trunk."""

    def __init__(self, width: int = 16, labels: int = 5) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({
            "tags": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, labels)),
            "depth": nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1)),
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        return {task: head(f) for task, head in self.heads.items()}


class Detector(nn.Module):
    """A detection-style head: one conv emitting 4 box, 1 objectness and C class channels per cell."""

    def __init__(self, width: int = 16, classes: int = 3, seg_classes: int = 6) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({
            "det": nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 5 + classes, 1)),
            "seg": nn.Conv2d(width, seg_classes, 1),
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        return {task: head(f) for task, head in self.heads.items()}


def detection_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Boxes (L1 where an object is), objectness (BCE), classes (CE where an object is).

    `target` per cell: 4 box values, objectness in {0, 1}, class index (B, 6, h, w)."""
    obj = target[:, 4]
    box = (pred[:, :4] - target[:, :4]).abs().sum(1)
    cls = F.cross_entropy(pred[:, 5:], target[:, 5].long(), reduction="none")
    weight = obj.sum().clamp(min=1)
    return F.binary_cross_entropy_with_logits(pred[:, 4], obj) + ((box + cls) * obj).sum() / weight


def objectness_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred[:, 4] > 0).float() == target[:, 4]).float().mean())


def box_error(pred: torch.Tensor, target: torch.Tensor) -> float:
    obj = target[:, 4] > 0
    return float((pred[:, :4] - target[:, :4]).abs().sum(1)[obj].mean()) if bool(obj.any()) else 0.0


class Gated(FPN):
    """The FPN with data-dependent control flow in its forward: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if float(x.mean()) > 10.0:  # a guard on the data, as real pre-processing code has
            x = x / 255.0
        return super().forward(x)


def _targets(task: str, batch: int, g: torch.Generator) -> torch.Tensor:
    size = IMAGE
    if task == "seg":
        return torch.randint(0, 6, (batch, size, size), generator=g)
    if task == "depth":
        return torch.rand(batch, 1, size, size, generator=g) + 0.5
    if task == "normal":
        return F.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1)
    if task == "scene":
        return torch.randint(0, 7, (batch,), generator=g)
    if task == "tags":
        return torch.randint(0, 2, (batch, 5), generator=g).float()
    if task == "det":
        cells = size // 4
        box = torch.rand(batch, 4, cells, cells, generator=g)
        obj = torch.randint(0, 2, (batch, 1, cells, cells), generator=g).float()
        cls = torch.randint(0, 3, (batch, 1, cells, cells), generator=g).float()
        return torch.cat([box, obj, cls], 1)
    raise AssertionError(task)


def batches(tasks: list[str], n: int = 3, size: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(size, 3, IMAGE, IMAGE, generator=g),
             **{t: _targets(t, size, g) for t in tasks}} for _ in range(n)]


def data(tasks: list[str], n: int = 3, size: int = 4) -> dict[str, list[dict[str, torch.Tensor]]]:
    """A user's data factory: train/val/test splits of dict batches (different seeds)."""
    return {split: batches(tasks, n, size, seed) for seed, split in enumerate(("train", "val", "test"))}


class HardCodedHeads(nn.Module):
    """Attention whose forward hard-codes its head layout (`view(b, n, 4, 8)`): it cannot be cut."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 8, stride=8)
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(32, 6, 1), "depth": nn.Conv2d(32, 1, 1)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.embed(x)
        b, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).view(b, h * w, 3, 4, 8).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1) @ v
        t = t + self.proj(a.transpose(1, 2).reshape(b, h * w, 32))
        g = t.transpose(1, 2).reshape(b, c, h, w)
        return {task: head(g) for task, head in self.heads.items()}


def hard_coded() -> nn.Module:
    torch.manual_seed(0)
    return HardCodedHeads()


def fpn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return FPN(width)


def vit(dim: int = 64, heads: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return ViT(dim=dim, heads=heads)


def sliced() -> nn.Module:
    torch.manual_seed(0)
    return Sliced()


def tagger() -> nn.Module:
    torch.manual_seed(0)
    return Tagger()


def detector() -> nn.Module:
    torch.manual_seed(0)
    return Detector()


def gated() -> nn.Module:
    torch.manual_seed(0)
    return Gated()


class HFViT(nn.Module):
    """A `transformers` ViT encoder (built from a config, random weights, nothing downloaded) with our heads."""

    def __init__(self, hidden: int = 32, layers: int = 2, heads: int = 4, classes: int = 6, scenes: int = 7) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=2 * hidden, image_size=IMAGE, patch_size=8, num_channels=3)
        self.encoder = ViTModel(config, add_pooling_layer=False)
        self.grid = IMAGE // 8
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(hidden, classes, 1), "scene": nn.Linear(hidden, scenes)})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.encoder(pixel_values=image, output_hidden_states=True)
        tokens = out.last_hidden_state
        b, _, c = tokens.shape
        inputs = {"seg": tokens[:, 1:].transpose(1, 2).reshape(b, c, self.grid, self.grid), "scene": tokens[:, 0]}
        return {task: head(inputs[task]) for task, head in self.heads.items()}


def hf_vit() -> nn.Module:
    torch.manual_seed(0)
    return HFViT()
