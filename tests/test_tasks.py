"""Losses and metrics on hand-made cases whose answers are worked out here."""

from __future__ import annotations

import math

import pytest
import torch

from taskcut.tasks.dense import TaskSpec, delta_t
from taskcut.tasks.maps import DenseErrorMetrics, DepthMetrics, NormalMetrics, SegmentationMetrics, resize_to


def test_segmentation_confusion_miou_and_accuracy() -> None:
    # target / prediction over 3 classes, 255 ignored:
    # t: 0 0 1 1 2 255   p: 0 1 1 1 0 2
    t = torch.tensor([[[0, 0, 1, 1, 2, 255]]])
    p = torch.tensor([[[0, 1, 1, 1, 0, 2]]])
    acc = SegmentationMetrics(3)
    acc.update(p, t)
    m = acc.compute()
    # class 0: tp 1, gt 2, pred 2 -> union 3 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: tp 0, union 1 -> 0
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    # AdaShare's variant leaves out class 2 (no true positive)
    assert m["miou_tp"] == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_segmentation_accumulates_over_the_split_not_per_batch() -> None:
    # batch 1 is perfect on class 0 only; batch 2 gets class 1 wrong half the time
    acc = SegmentationMetrics(2)
    acc.update(torch.tensor([[[0, 0, 0, 0]]]), torch.tensor([[[0, 0, 0, 0]]]))
    acc.update(torch.tensor([[[1, 0]]]), torch.tensor([[[1, 1]]]))
    m = acc.compute()
    # whole split: class 0 tp 4, union 5 -> 0.8; class 1 tp 1, union 2 -> 0.5
    assert m["miou"] == pytest.approx((0.8 + 0.5) / 2)
    assert m["pixel_acc"] == pytest.approx(5 / 6)


def test_segmentation_from_logits_and_absent_class() -> None:
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 1, 0, 0] = 5
    logits[0, 1, 0, 1] = 5
    acc = SegmentationMetrics(4)
    acc.update(logits, torch.tensor([[[1, 1]]]))
    m = acc.compute()
    assert m["miou"] == 1.0  # classes 0, 2, 3 never occur: left out, not counted as 0
    assert torch.isnan(acc.iou()[0])


def test_normal_angles() -> None:
    # four pixels: errors 0, 90, 45 and 10 degrees; one invalid pixel (zero target)
    target = torch.zeros(1, 3, 1, 5)
    pred = torch.zeros(1, 3, 1, 5)
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0]); pred[0, :, 0, 0] = torch.tensor([0.0, 0.0, 2.0])
    target[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0]); pred[0, :, 0, 1] = torch.tensor([0.0, 1.0, 0.0])
    target[0, :, 0, 2] = torch.tensor([1.0, 0.0, 0.0]); pred[0, :, 0, 2] = torch.tensor([1.0, 1.0, 0.0])
    a = math.radians(10)
    target[0, :, 0, 3] = torch.tensor([1.0, 0.0, 0.0]); pred[0, :, 0, 3] = torch.tensor([math.cos(a), math.sin(a), 0.0])
    pred[0, :, 0, 4] = torch.tensor([1.0, 0.0, 0.0])
    acc = NormalMetrics()
    acc.update(pred, target)
    m = acc.compute()
    assert m["mean_angle"] == pytest.approx((0 + 90 + 45 + 10) / 4, abs=1e-6)
    assert m["median_angle"] == pytest.approx(10.0, abs=1e-3)  # lower median of 0, 10, 45, 90
    assert m["within_11.25"] == pytest.approx(50.0)
    assert m["within_22.5"] == pytest.approx(50.0)
    assert m["within_30"] == pytest.approx(50.0)


def test_depth_errors_and_deltas() -> None:
    target = torch.tensor([[[[1.0, 2.0, 4.0, 0.0]]]])  # last pixel invalid
    pred = torch.tensor([[[[1.1, 3.0, 2.0, 9.0]]]])
    acc = DepthMetrics()
    acc.update(pred, target)
    m = acc.compute()
    assert m["abs_err"] == pytest.approx((0.1 + 1.0 + 2.0) / 3)
    assert m["rel_err"] == pytest.approx((0.1 + 0.5 + 0.5) / 3)
    # ratios: 1.1, 1.5, 2.0 -> below 1.25: 1; below 1.5625: 2; below 1.953: 2
    assert m["delta_1.25"] == pytest.approx(100 / 3)
    assert m["delta_1.25^2"] == pytest.approx(200 / 3)
    assert m["delta_1.25^3"] == pytest.approx(200 / 3)


def test_dense_errors_are_pixel_weighted_across_batches() -> None:
    acc = DenseErrorMetrics()
    acc.update(torch.ones(1, 1, 1, 3), torch.zeros(1, 1, 1, 3))      # errors 1,1,1
    acc.update(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 3.0))  # error 3
    m = acc.compute()
    assert m["mae"] == pytest.approx(6 / 4)   # a mean of batch means would give 2
    assert m["mse"] == pytest.approx(12 / 4)


def test_predictions_are_resized_to_the_target_size() -> None:
    pred = torch.arange(4.0).view(1, 1, 2, 2)
    up = resize_to(pred, (4, 4))
    assert up.shape == (1, 1, 4, 4)
    assert up[0, 0, 0, 0] == 0.0 and up[0, 0, 3, 3] == 3.0
    assert resize_to(pred, (2, 2)) is pred


def test_losses() -> None:
    seg = TaskSpec("seg", "segmentation", 3)
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0, 0, 0] = 100.0
    target = torch.tensor([[[0, 255]]])
    assert float(seg.loss(logits, target)) == pytest.approx(0.0, abs=1e-6)  # the ignored pixel does not count
    normal = TaskSpec("normal", "normal", 3)
    n = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    assert float(normal.loss(3 * n, n)) == pytest.approx(0.0, abs=1e-6)
    assert float(normal.loss(-n, n)) == pytest.approx(2.0, abs=1e-6)
    depth = TaskSpec("depth", "depth", 1)
    assert float(depth.loss(torch.tensor([[[[2.0, 5.0]]]]), torch.tensor([[[[1.0, 0.0]]]]))) == pytest.approx(1.0)
    edge = TaskSpec("edge", "edge", 1)
    assert float(edge.loss(torch.full((1, 1, 1, 2), 0.5), torch.tensor([[[[1.0, 0.0]]]]))) == pytest.approx(0.25)


def test_l2_keeps_soft_maps_where_l1_collapses_to_zero() -> None:
    """Why edge/keypoint train with MSE: on a pixel that is an edge 30% of the time, L1's best constant is 0."""
    targets = torch.tensor([1.0] * 3 + [0.0] * 7)
    grid = torch.linspace(0, 1, 101)
    l1 = torch.stack([(targets - c).abs().mean() for c in grid])
    l2 = torch.stack([((targets - c) ** 2).mean() for c in grid])
    assert float(grid[l1.argmin()]) == 0.0
    assert float(grid[l2.argmin()]) == pytest.approx(0.3)


def test_delta_t_convention() -> None:
    tasks = {"seg": TaskSpec("seg", "segmentation", 3), "depth": TaskSpec("depth", "depth", 1)}
    base = {"seg": {"miou": 0.5, "pixel_acc": 0.8, "miou_tp": 0.6},
            "depth": {"abs_err": 1.0, "rel_err": 0.2, "delta_1.25": 50.0, "delta_1.25^2": 80.0, "delta_1.25^3": 90.0}}
    new = {"seg": {"miou": 0.55, "pixel_acc": 0.8, "miou_tp": 0.1},
           "depth": {"abs_err": 1.1, "rel_err": 0.2, "delta_1.25": 50.0, "delta_1.25^2": 80.0, "delta_1.25^3": 90.0}}
    report = delta_t(new, base, tasks)
    # seg: (+10% miou, 0% acc) / 2 = +5 (miou_tp is not part of delta_T); depth: (-10% for higher abs_err) / 5 = -2
    assert report.per_task["seg"] == pytest.approx(5.0)
    assert report.per_task["depth"] == pytest.approx(-2.0)
    assert report.delta_t == pytest.approx(1.5)
    assert delta_t(base, base, tasks).delta_t == 0.0


def test_delta_t_refuses_zero_baseline_and_missing_task() -> None:
    tasks = {"edge": TaskSpec("edge", "edge", 1)}
    with pytest.raises(ValueError, match="undefined"):
        delta_t({"edge": {"mae": 1.0, "mse": 1.0}}, {"edge": {"mae": 0.0, "mse": 1.0}}, tasks)
    with pytest.raises(ValueError, match="missing"):
        delta_t({}, {"edge": {"mae": 1.0, "mse": 1.0}}, tasks)


def test_task_spec_validation() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        TaskSpec("x", "pose", 3)
    with pytest.raises(ValueError, match="3 channels"):
        TaskSpec("n", "normal", 2)


def test_keypoint_delta_uses_the_squared_error_that_zeros_cannot_win() -> None:
    """A soft map with lower MSE but higher MAE than a baseline of zeros is better in delta_T."""
    spec = TaskSpec("keypoint", "keypoint", 1)
    assert [m.name for m in spec.metrics if m.in_delta] == ["mse"]
    report = delta_t({"keypoint": {"mae": 0.105, "mse": 0.031}}, {"keypoint": {"mae": 0.090, "mse": 0.051}},
                     {"keypoint": spec})
    assert report.delta_t > 0
