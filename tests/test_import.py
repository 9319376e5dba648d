"""`taskcut import`: reference SceneNet checkpoints (AdaShare/DiSparse/CUT key names) into taskcut models."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn.utils import prune as torch_prune
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.compact.masking import masks_of
from taskcut.models import build_model

from .conftest import tiny_model_config

runner = CliRunner()
TASKS = ["seg", "normal", "depth"]


def _reference_name(key: str) -> str:
    """How the reference SceneNet names a taskcut parameter (written out here, independently of taskcut)."""
    parts = key.split(".")
    if parts[0] == "trunk":
        if parts[1].startswith("layer"):
            stage, block = int(parts[1][len("layer"):]) - 1, parts[2]
            if parts[3] == "downsample":
                return ".".join(["backbone", "ds", str(stage), *parts[4:]])
            return ".".join(["backbone", "blocks", str(stage), block, *parts[3:]])
        return ".".join(["backbone", *parts[1:]])
    assert parts[0] == "heads" and parts[2] == "branches"
    return ".".join([f"task{TASKS.index(parts[1]) + 1}_fc1_c{parts[3]}", *parts[4:]])


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(1)
    config = tiny_model_config({"seg": {"kind": "segmentation", "channels": 40},
                                "normal": {"kind": "normal", "channels": 3}, "depth": {"kind": "depth", "channels": 1}})
    model = build_model(config)
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the defaults
        model(torch.randn(4, 3, 32, 32))
    return model.eval()


def _outputs(model: torch.nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(image)


def _import(ckpt: Path, out: Path, *extra: str):
    """Import with the source's head dilations (weights cannot tell them), given as a config file."""
    config = ckpt.with_name("source.yaml")
    config.write_text(yaml.safe_dump({"model": tiny_model_config({"seg": {"kind": "segmentation", "channels": 40}})
                                      .model_dump(mode="json")}))
    return runner.invoke(app, ["import", str(ckpt), "--arch", "scenenet-resnet18", "--tasks", ",".join(TASKS),
                               "--config", str(config), "--out", str(out), *extra])


@pytest.mark.parametrize("layout", ["plain", "module-prefix", "nested"])
def test_dense_checkpoint_imports_with_identical_outputs(source, tmp_path: Path, layout: str) -> None:
    state = {_reference_name(k): v for k, v in source.state_dict().items()}
    if layout == "module-prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    obj = {"mtl-net": state, "iter": 1000, "task1_logits": torch.zeros(3)} if layout == "nested" else state
    torch.save(obj, tmp_path / "ref.pth.tar")
    out = tmp_path / "imported.safetensors"
    result = _import(tmp_path / "ref.pth.tar", out)
    assert result.exit_code == 0, result.output
    imported = load(out)
    assert imported.tasks == TASKS
    assert imported.config.tasks["seg"].channels == 40
    image = torch.randn(2, 3, 32, 32)
    expected, got = _outputs(source, image), _outputs(imported, image)
    assert all(torch.equal(expected[t], got[t]) for t in TASKS)


def test_pruned_checkpoint_bakes_masks_and_keeps_them(source, tmp_path: Path) -> None:
    pruned = build_model(source.config)
    pruned.load_state_dict(source.state_dict())
    pruned.eval()
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        torch_prune.l1_unstructured(conv, "weight", amount=0.6)
    state = {}
    for key, value in pruned.state_dict().items():  # holds weight_orig / weight_mask
        head, _, leaf = key.rpartition(".")
        state["module." + _reference_name(key if leaf not in ("weight_orig", "weight_mask") else head + ".weight")
              .rsplit(".", 1)[0] + "." + leaf] = value
    assert any(k.endswith("weight_orig") for k in state)
    torch.save(state, tmp_path / "pruned.pth")
    out = tmp_path / "imported.safetensors"
    result = _import(tmp_path / "pruned.pth", out)
    assert result.exit_code == 0, result.output
    imported = load(out)
    image = torch.randn(2, 3, 32, 32)
    expected, got = _outputs(pruned, image), _outputs(imported, image)
    assert all(torch.allclose(expected[t], got[t], atol=1e-6, rtol=1e-5) for t in TASKS)
    masks = masks_of(imported)
    assert len(masks) == len(convs)  # sparsity survives: fine-tuning keeps the pruned weights at zero
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert kept == pytest.approx(0.4, abs=0.02)


def test_keys_that_do_not_fit_are_named_and_nothing_is_written(source, tmp_path: Path) -> None:
    state = {_reference_name(k): v for k, v in source.state_dict().items()}
    del state["backbone.blocks.1.0.conv2.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "ref.pth")
    out = tmp_path / "imported.safetensors"
    result = _import(tmp_path / "ref.pth", out)
    assert result.exit_code == 2
    text = re.sub(r"\s+", " ", result.output)
    assert "backbone.blocks.1.0.conv2.weight" in text and "backbone.extra.weight" in text
    assert not out.exists()
    result = runner.invoke(app, ["import", str(tmp_path / "ref.pth"), "--arch", "scenenet-resnet34", "--tasks",
                                 "seg,normal,depth", "--out", str(out)])
    assert result.exit_code == 2 and "missing key" in result.output and not out.exists()
    result = runner.invoke(app, ["import", str(tmp_path / "ref.pth"), "--arch", "scenenet-resnet50", "--tasks",
                                 "seg", "--out", str(out)])
    assert result.exit_code == 2 and "unsupported --arch" in result.output and not out.exists()
    result = runner.invoke(app, ["import", str(tmp_path / "ref.pth"), "--tasks", "seg,occlusion", "--out", str(out)])
    assert result.exit_code == 2 and "occlusion:KIND" in result.output


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    with open(ckpt, "wb") as f:
        pickle.dump({"backbone.conv1.weight": _Exploit(marker)}, f)
    out = tmp_path / "imported.safetensors"
    result = _import(ckpt, out)
    assert result.exit_code == 2
    assert "refused" in result.output
    assert not marker.exists()  # the payload never ran
    assert not out.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    result = _import(junk, tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "junk.pth" in result.output
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    result = _import(tmp_path / "nostate.pth", tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "no state dict" in result.output
