"""Masks through parametrize: zeros stay zero in fine-tuning; sparse files are small and reload exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from taskcut.compact.masking import apply_masks, masks_of, sparsity_report
from taskcut.config import TrainConfig
from taskcut.data import SynthDataset
from taskcut.models import build_model, load, save
from taskcut.cut.score import prunable_parameters
from taskcut.cut.select import select
from taskcut.train.fit import fit

from .conftest import tiny_model_config


def _random_masks(model: torch.nn.Module, keep: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in prunable_parameters(model).items()}


def test_masks_use_parametrize_and_zero_the_weights() -> None:
    model = build_model(tiny_model_config())
    masks = _random_masks(model, 0.3)
    apply_masks(model, masks)
    conv = model.trunk.conv1
    assert parametrize.is_parametrized(conv, "weight")
    assert torch.equal(conv.weight == 0, ~masks["trunk.conv1.weight"] | (conv.weight == 0))
    assert set(masks_of(model)) == set(masks)
    overall, per_layer = sparsity_report(model)
    assert overall == pytest.approx(0.7, abs=0.02) and set(per_layer) == set(masks)


def test_masked_weights_stay_exactly_zero_through_finetuning(synth_dir: Path) -> None:
    model = select(build_model(tiny_model_config()), ["seg", "depth"]).model
    masks = _random_masks(model, 0.4)
    apply_masks(model, masks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(steps=4, batch_size=4, val_every=2, lr=1e-2, weight_decay=1e-3)
    fit(model, model.config.task_specs(), {}, cfg, SynthDataset(synth_dir, "train"),
        SynthDataset(synth_dir, "val"), show_progress=False)
    for name, mask in masks.items():
        module, _, attr = name.rpartition(".")
        weight = getattr(model.get_submodule(module), attr)
        assert torch.all(weight[~mask] == 0), name
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it did train


def test_sparse_file_reloads_exactly_and_is_small(tmp_path: Path) -> None:
    dense = select(build_model(tiny_model_config()).eval(), ["seg", "depth"]).model
    dense_path = save(dense, tmp_path / "dense.safetensors")
    sparse = select(build_model(tiny_model_config()).eval(), ["seg", "depth"]).model
    sparse.load_state_dict(dense.state_dict())
    apply_masks(sparse, _random_masks(sparse, 0.3))
    path = save(sparse, tmp_path / "sparse.safetensors")
    again = load(path)
    assert set(masks_of(again)) == set(masks_of(sparse))
    for n, m in masks_of(sparse).items():
        assert torch.equal(masks_of(again)[n], m)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = sparse(x), again(x)
    assert all(torch.equal(a[t], b[t]) for t in a)
    assert path.stat().st_size <= 0.40 * dense_path.stat().st_size
