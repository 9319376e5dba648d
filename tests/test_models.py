"""The SceneNet zoo and the model file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from taskcut.errors import TaskcutError
from taskcut.models import build_model, count_parameters, load, read_spec, save

from .conftest import tiny_model_config


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_outputs_keyed_by_task_at_output_stride_8(depth: int) -> None:
    cfg = tiny_model_config().model_copy(update={"depth": depth})
    model = build_model(cfg).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert list(out) == ["seg", "normal", "depth", "keypoint", "edge"]
    # 64 -> conv/2 = 32 -> ceil-mode pool = 17 -> stage 2 = 9, as DeepLab's 321 -> 41
    assert out["seg"].shape == (2, 6, 9, 9)
    assert out["normal"].shape == (2, 3, 9, 9)
    assert out["depth"].shape == (2, 1, 9, 9)


def test_head_has_four_summed_dilated_branches() -> None:
    cfg = tiny_model_config().model_copy(update={"head_dilations": [6, 12, 18, 24]})
    head = build_model(cfg).heads["depth"]
    assert [b.conv1.dilation[0] for b in head.branches] == [6, 12, 18, 24]
    x = torch.randn(1, head.branches[0].conv1.in_channels, 5, 5)
    assert torch.allclose(head(x), sum(b(x) for b in head.branches))


def test_full_size_resnet34_matches_the_paper_scale() -> None:
    cfg = tiny_model_config().model_copy(update={"depth": 34, "width": 1.0, "head_hidden": 1024,
                                                  "head_dilations": [6, 12, 18, 24]})
    model = build_model(cfg)
    trunk = sum(p.numel() for p in model.trunk.parameters())
    assert 21_000_000 < trunk < 21_500_000  # ResNet-34 without its classifier: 21.28 M
    assert count_parameters(model) > trunk


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = build_model(tiny_model_config()).eval()
    path = save(model, tmp_path / "m.safetensors", {"note": "test"})
    again = load(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), again(x)
    for task in a:
        assert torch.equal(a[task], b[task])
    spec = read_spec(path)
    assert spec["provenance"] == {"note": "test"}
    assert spec["model"]["tasks"]["seg"] == {"kind": "segmentation", "channels": 6, "loss_weight": 1.0}


def test_load_refuses_non_models(tmp_path: Path) -> None:
    with pytest.raises(TaskcutError, match="does not exist"):
        load(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(TaskcutError, match="not a readable .safetensors"):
        load(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(TaskcutError, match="not a taskcut model"):
        load(plain)


def test_load_refuses_tensors_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    model = build_model(tiny_model_config())
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    spec = {"format": "taskcut.model", "version": 1, "model": model.config.model_dump(mode="json"), "provenance": {}}
    del tensors["heads.seg.branches.0.conv3.bias"]
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"taskcut": json.dumps(spec)})
    with pytest.raises(TaskcutError, match="missing.*conv3.bias"):
        load(path)


@pytest.mark.parametrize("tasks", [["seg"], ["depth", "seg"], ["seg", "normal", "depth", "keypoint", "edge"]])
def test_the_layout_put_together_from_parts_is_the_built_models(tasks: list[str]) -> None:
    """`layout` (files are checked against it, structured changes recorded as its differences) equals the
    shapes and order of the model the config builds, for any selection of heads."""
    from taskcut.config import load_config
    from taskcut.models.multitask import layout

    full = load_config("synth-tiny").model
    config = full.model_copy(update={"tasks": {t: full.tasks[t] for t in tasks}}, deep=True)
    model = build_model(config)
    count, shapes = layout(config)
    assert list(shapes.items()) == [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert count == sum(p.numel() for p in model.parameters())
