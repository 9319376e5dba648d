"""Unstructured compaction: masks applied through `torch.nn.utils.parametrize`.

The weight a module computes with is `original * mask`; the mask is a buffer of the
parametrization, so gradients reach only kept entries and pruned weights stay exactly zero
through fine-tuning (the original is zeroed too, so it never carries stale values).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize


class WeightMask(nn.Module):
    """`weight -> weight * mask`, the mask kept as a non-trainable buffer."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach `masks` (True = keep) to the named weights of `model`, in place."""
    for name, mask in masks.items():
        module, attr = _owner(model, name)
        weight = getattr(module, attr)
        if weight.shape != mask.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
        if parametrize.is_parametrized(module, attr):
            raise ValueError(f"{name} is already masked")
        with torch.no_grad():
            weight.mul_(mask.to(weight.dtype))
        parametrize.register_parametrization(module, attr, WeightMask(mask.to(weight.device)))
    return model


def unmask(model: nn.Module) -> dict[str, torch.Tensor]:
    """Take the masks off `model` in place, leaving their zeros in plain weights; return the masks.

    Re-pruning starts here: a model that already carries masks (a compact file, an imported
    pruned checkpoint) is scored on its effective weights, and its masks come back as the
    `fixed` entries that fusion must keep at zero.
    """
    masks = {name: mask.clone() for name, mask in masks_of(model).items()}
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        # Not `remove_parametrizations`: it deletes the property from the parametrized class, which a
        # deep copy shares with its original, so unmasking a copy would break the original model.
        # `weight * mask` leaves -0.0 where a negative weight was masked: written as +0.0, so every pruned
        # weight is the same bytes (an exported file's zeros then compress alike, whatever the weights were)
        values = {attr: (plist.original, _plain_zeros(getattr(module, attr).detach()))
                  for attr, plist in module.parametrizations.items()}
        plain_class = parametrize.type_before_parametrizations(module)
        delattr(module, "parametrizations")
        module.__class__ = plain_class
        for attr, (original, value) in values.items():
            with torch.no_grad():
                original.copy_(value)
            module.register_parameter(attr, original)
    return masks


def _plain_zeros(value: torch.Tensor) -> torch.Tensor:
    return torch.where(value == 0, torch.zeros_like(value), value)


def remask_zeros(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Mask the zeros of the named plain weights (after channel removal sliced them), so they stay zero."""
    masks = {}
    params = dict(model.named_parameters())
    for name in names:
        if name in params:
            masks[name] = params[name].detach() != 0
    apply_masks(model, masks)
    return masks


def plain_name(name: str) -> str:
    """`a.parametrizations.weight.original` (PyTorch's name for a parametrized leaf) -> `a.weight`."""
    head, sep, rest = name.rpartition("parametrizations.")
    if not sep or not rest.endswith(".original"):
        return name
    return head + rest[: -len(".original")]


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks attached to `model`, by the weight's plain name."""
    out = {}
    for mod_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attr, plist in module.parametrizations.items():
            for p in plist:
                if isinstance(p, WeightMask):
                    out[f"{mod_name}.{attr}" if mod_name else attr] = p.mask
    return out


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict under plain names, with masked weights as their effective (zeroed) values."""
    state: dict[str, torch.Tensor] = {}
    masked = masks_of(model)
    for key, value in model.state_dict().items():
        if ".parametrizations." in key:
            continue
        state[key] = value
    for name in masked:
        module, attr = _owner(model, name)
        state[name] = getattr(module, attr).detach()
    return state


def sparsity_report(model: nn.Module, names: list[str] | None = None) -> tuple[float, dict[str, float]]:
    """Zero fraction overall and per weight, over masked weights (or `names`)."""
    masked = masks_of(model)
    names = names if names is not None else list(masked)
    per_layer, zeros, total = {}, 0, 0
    for name in names:
        module, attr = _owner(model, name)
        w = getattr(module, attr).detach()
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros += z
        total += w.numel()
    return (zeros / total if total else 0.0), per_layer
