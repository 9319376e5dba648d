"""decompose (from the autograd graph) and select (heads really removed) on three layouts."""

from __future__ import annotations

import pytest
import torch

from taskcut.cut.decompose import decompose
from taskcut.errors import TaskcutError
from taskcut.models import build_model
from taskcut.cut.select import select

from .archs import PartialNeck, TupleOutput, UNetLike, Untraceable
from .conftest import tiny_model_config

X = torch.randn(2, 3, 16, 16)


def test_scenenet_trunk_is_shared_and_heads_are_own() -> None:
    model = build_model(tiny_model_config())
    d = decompose(model, X)
    trunk = {n for n, _ in model.named_parameters() if n.startswith("trunk.")}
    assert set(d.shared) == trunk
    for task in model.tasks:
        assert set(d.head(task)) == {n for n, _ in model.named_parameters() if n.startswith(f"heads.{task}.")}
    assert d.unused == []


def test_unet_skip_connection() -> None:
    d = decompose(UNetLike(), X)
    assert d.users["e1.weight"] == {"seg", "depth"}   # depth reads e2, which reads e1
    assert d.users["e2.weight"] == {"seg", "depth"}
    assert set(d.head("seg")) == {"seg_up.weight", "seg_up.bias", "seg_skip.weight", "seg_skip.bias",
                                  "seg_out.weight", "seg_out.bias"}
    assert set(d.head("depth")) == {"depth_out.weight", "depth_out.bias"}


def test_neck_shared_by_two_of_three_tasks() -> None:
    d = decompose(PartialNeck(), X)
    assert d.users["trunk.0.weight"] == {"seg", "normal", "depth"}
    assert d.users["trunk.1.weight"] == {"seg", "normal", "depth"}  # BatchNorm affine
    assert d.users["neck.0.weight"] == {"seg", "normal"}
    assert d.users["scale"] == {"depth"}
    assert set(d.head("depth")) == {"depth.0.weight", "depth.0.bias", "depth.2.weight", "depth.2.bias", "scale"}


def test_list_output_needs_task_names() -> None:
    d = decompose(TupleOutput(), X, ["seg", "normal", "depth"])
    assert d.users["neck.0.weight"] == {"seg", "normal"}
    with pytest.raises(TaskcutError, match="give its task names"):
        decompose(TupleOutput(), X)


def test_output_not_keyed_by_task() -> None:
    with pytest.raises(TaskcutError, match="not keyed by task"):
        decompose(torch.nn.Conv2d(3, 2, 1), X)


def test_select_zoo_drops_heads_and_keeps_outputs() -> None:
    model = build_model(tiny_model_config()).eval()
    small = select(model, ["depth", "seg"]).model
    assert small.tasks == ["seg", "depth"] and list(small.config.tasks) == ["seg", "depth"]
    assert not any(k.startswith(("heads.normal", "heads.edge", "heads.keypoint")) for k in small.state_dict())
    assert model.tasks == ["seg", "normal", "depth", "keypoint", "edge"]  # original untouched
    with torch.no_grad():
        full, part = model(X), small(X)
    assert list(part) == ["seg", "depth"]
    for t in part:
        assert torch.equal(full[t], part[t])


def test_select_traced_removes_what_only_unselected_tasks_need() -> None:
    model = PartialNeck().eval()
    small = select(model, ["depth"]).model
    keys = set(small.state_dict())
    assert not any(k.startswith(("neck.", "seg.", "normal.")) for k in keys)
    assert {"trunk.0.weight", "depth.0.weight", "scale"} <= keys
    with torch.no_grad():
        assert torch.equal(small(X)["depth"], model(X)["depth"])
    other = select(model, ["seg", "normal"]).model
    assert "scale" not in dict(other.named_parameters())
    assert not any(k.startswith("depth.") for k in other.state_dict())


def test_select_bad_tasks_and_untraceable() -> None:
    model = build_model(tiny_model_config())
    with pytest.raises(TaskcutError, match="unknown task.*pose.*the model's tasks are seg, normal"):
        select(model, ["seg", "pose"]).model
    with pytest.raises(TaskcutError, match="at least one task"):
        select(model, []).model
    with pytest.raises(TaskcutError, match="cannot be traced"):
        select(Untraceable(), ["seg"]).model
