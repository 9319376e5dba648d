"""Image-level and custom task kinds, the `Task` constructors, and saving specs: answers worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from taskcut.trust import trusting
from taskcut.tasks import (TASK_KINDS, BinaryMetrics, ClassificationMetrics, Task, TaskSpec, average_precision,
                           delta_t)

# --------------------------------------------------------------------------- constructors


def test_constructors_match_the_plain_specs_and_are_unnamed() -> None:
    assert Task is TaskSpec
    assert Task.segmentation(13) == TaskSpec("", "segmentation", 13)
    assert Task.depth() == TaskSpec("", "depth", 1)
    assert Task.normal() == TaskSpec("", "normal", 3)
    assert Task.edge() == TaskSpec("", "edge", 1)
    assert Task.keypoint() == TaskSpec("", "keypoint", 1)
    assert Task.classification(10) == TaskSpec("", "classification", 10, ignore_index=-100)
    assert Task.regression() == TaskSpec("", "regression", 1)
    assert Task.regression(3, loss="mse") == TaskSpec("", "regression", 3, regression_loss="mse")
    assert Task.binary(4) == TaskSpec("", "binary", 4)
    named = Task.segmentation(13, ignore_index=0).named("seg")
    assert (named.name, named.channels, named.ignore_index) == ("seg", 13, 0)
    assert {Task.depth().named("d"), Task.depth().named("d")} == {TaskSpec("d", "depth", 1)}  # hashable
    assert [Task.segmentation(2).dense, Task.edge().dense, Task.classification(2).dense,
            Task.custom(F.l1_loss).dense] == [True, True, False, False]
    assert {"classification", "regression", "binary", "custom"} <= set(TASK_KINDS)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="direction must be \"higher\" or \"lower\""):
        Task.custom(F.l1_loss, metrics={"acc": (F.l1_loss, "up")})
    with pytest.raises(ValueError, match=r"custom task 'mine' has no loss"):
        TaskSpec("mine", "custom", 0)
    with pytest.raises(ValueError, match="has no loss"):
        Task.custom(None)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Task.classification(1)
    with pytest.raises(ValueError, match="at least 1 output"):
        Task.regression(0)
    with pytest.raises(ValueError, match="at least 1 label"):
        Task.binary(0)
    with pytest.raises(ValueError, match="regression loss must be one of l1, mse"):
        Task.regression(loss="huber")
    with pytest.raises(ValueError, match="for custom tasks"):
        TaskSpec("seg", "segmentation", 3, loss_fn=F.l1_loss)
    with pytest.raises(ValueError, match="given twice"):
        TaskSpec("c", "custom", 0, loss_fn=F.l1_loss,
                 custom_metrics=(("a", F.l1_loss, False), ("a", F.mse_loss, False)))
    with pytest.raises(ValueError, match="non-empty"):
        Task.depth().named("")
    with pytest.raises(ValueError, match="does not import"):
        Task.custom("taskcut_no_such_module:loss")


def test_custom_fields_do_not_break_equality_or_hashing() -> None:
    a = Task.custom(F.l1_loss, {"m": (F.mse_loss, "lower")}).named("c")
    b = Task.custom(F.mse_loss).named("c")
    assert a == b and hash(a) == hash(b)  # functions are not compared (see TaskSpec's docstring)
    assert a != Task.custom(F.l1_loss).named("other")


# --------------------------------------------------------------------------- classification


def test_classification_loss_is_cross_entropy_over_labelled_images() -> None:
    spec = Task.classification(4).named("cls")
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    target = torch.tensor([0, 3, -100, 2, 1])
    keep = target != -100
    expected = F.cross_entropy(logits[keep], target[keep])
    assert float(spec.loss(logits, target)) == pytest.approx(float(expected), abs=1e-6)
    # a batch with every label ignored gives a zero that still has a gradient (not NaN)
    pred = logits.clone().requires_grad_(True)
    loss = spec.loss(pred, torch.full((5,), -100))
    loss.backward()
    assert float(loss.detach()) == 0.0 and pred.grad is not None and bool(torch.isfinite(pred.grad).all())


def test_classification_refuses_dense_maps_and_float_targets() -> None:
    spec = Task.classification(3).named("cls")
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        spec.loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer class targets"):
        spec.loss(torch.zeros(2, 3), torch.zeros(2, 3))


def test_accuracy_and_top5_accumulate_over_the_split() -> None:
    spec = Task.classification(7, ignore_index=-1).named("cls")
    assert [m.name for m in spec.metrics] == ["accuracy", "top5"]
    # scores rank class k at position k: image i's ranking is the row's descending order
    ranking = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])  # class 0 first, class 6 last
    acc = spec.accumulator()
    acc.update(ranking.repeat(3, 1), torch.tensor([0, 4, 5]))      # top1 hit; top5 hit; miss both
    acc.update(ranking.repeat(2, 1), torch.tensor([1, -1]))        # top5 hit; ignored
    m = acc.compute()
    assert m["accuracy"] == pytest.approx(1 / 4)
    assert m["top5"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="class 7"):
        acc.update(ranking.repeat(1, 1), torch.tensor([7]))


def test_top5_only_with_more_than_five_classes() -> None:
    spec = Task.classification(5)
    assert [m.name for m in spec.metrics] == ["accuracy"]
    acc = spec.accumulator()
    acc.update(torch.eye(5), torch.tensor([0, 1, 2, 0, 0]))
    assert acc.compute() == {"accuracy": pytest.approx(3 / 5)}
    assert isinstance(acc, ClassificationMetrics)


# --------------------------------------------------------------------------- regression


def test_regression_losses_and_nan_targets() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [4.0, 2.0]])
    l1 = Task.regression(2).named("r").loss(pred, target)
    assert float(l1.detach()) == pytest.approx((1 + 1 + 3) / 3)
    mse = Task.regression(2, loss="mse").named("r").loss(pred, target)
    assert float(mse.detach()) == pytest.approx((1 + 1 + 9) / 3)
    mse.backward()
    assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())
    assert float(pred.grad[0, 1]) == 0.0  # the missing value takes no part
    # all missing: zero, not NaN
    assert float(Task.regression(2).loss(pred, torch.full((2, 2), float("nan"))).detach()) == 0.0


def test_regression_accepts_flat_targets_for_one_output() -> None:
    spec = Task.regression().named("age")
    assert float(spec.loss(torch.tensor([[1.0], [2.0]]), torch.tensor([2.0, 4.0]))) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="targets of shape"):
        Task.regression(2).loss(torch.zeros(2, 2), torch.zeros(2))


def test_regression_metrics_are_value_weighted_and_only_mae_counts() -> None:
    spec = Task.regression(2).named("r")
    acc = spec.accumulator()
    acc.update(torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, float("inf")]]))  # error 1 (one value missing)
    acc.update(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[2.0, 2.0], [2.0, 2.0]]))  # errors 2, 2, 2, 2
    m = acc.compute()
    assert m["mae"] == pytest.approx(9 / 5)
    assert m["mse"] == pytest.approx(17 / 5)
    assert [(x.name, x.higher_is_better, x.in_delta) for x in spec.metrics] == [("mae", False, True),
                                                                              ("mse", False, False)]


# --------------------------------------------------------------------------- binary (multi-label)


def test_average_precision_by_hand() -> None:
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0]))
    assert ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    # ties keep their order in the split: the stable ranking puts the first of a tie first
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == pytest.approx(1 / 2)
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(1.0)
    assert math.isnan(average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


def test_map_over_the_split_skips_labels_without_positives() -> None:
    spec = Task.binary(3).named("tags")
    acc = spec.accumulator()
    assert isinstance(acc, BinaryMetrics)
    # label 0: scores 0.9 0.8 | 0.7 0.6, targets 1 0 | 1 0  -> (1 + 2/3) / 2
    # label 1: scores 0.1 0.4 | 0.3 0.2, targets 1 0 | NaN 0 -> ranking 0.4(0) 0.2(0) 0.1(1): 1/3
    # label 2: no positive anywhere -> left out of the mean
    nan = float("nan")
    acc.update(torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.4, 0.0]]), torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    acc.update(torch.tensor([[0.7, 0.3, 0.0], [0.6, 0.2, 0.0]]), torch.tensor([[1.0, nan, 0.0], [0.0, 0.0, 0.0]]))
    assert acc.compute()["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        acc.update(torch.zeros(1, 3), torch.tensor([[0.5, 0.0, 0.0]]))


def test_binary_loss_is_bce_with_logits_over_known_labels() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    loss = Task.binary(2).named("b").loss(logits, target)
    known = torch.isfinite(target)
    expected = F.binary_cross_entropy_with_logits(logits.detach()[known], target[known])
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-6)
    loss.backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all()) and float(logits.grad[0, 1]) == 0.0


# --------------------------------------------------------------------------- custom


def _batch_max(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).abs().max())


def test_custom_loss_and_batch_weighted_metric() -> None:
    spec = Task.custom(lambda p, t: ((p - t) ** 3).sum(), metrics={"maxerr": (_batch_max, "lower")}).named("c")
    pred, target = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 0.0])
    assert float(spec.loss(pred, target)) == pytest.approx(9.0)
    assert [(m.name, m.higher_is_better, m.in_delta) for m in spec.metrics] == [("maxerr", False, True)]
    acc = spec.accumulator()
    acc.update(torch.tensor([4.0]), torch.tensor([0.0]))                 # batch of 1: 4
    acc.update(torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3))            # batch of 3: 1
    assert acc.compute()["maxerr"] == pytest.approx((4 * 1 + 1 * 3) / 4)  # not (4 + 1) / 2
    with pytest.raises(TypeError, match="must return a tensor"):
        Task.custom(lambda p, t: 1.0).named("bad").loss(pred, target)


# --------------------------------------------------------------------------- delta_T


def test_delta_t_for_every_new_kind_has_the_right_sign() -> None:
    tasks = {"cls": Task.classification(10).named("cls"), "reg": Task.regression().named("reg"),
             "tags": Task.binary(5).named("tags"),
             "c": Task.custom(F.l1_loss, {"err": (_batch_max, "lower"), "score": (_batch_max, "higher")}).named("c")}
    base = {"cls": {"accuracy": 0.5, "top5": 0.8}, "reg": {"mae": 2.0, "mse": 8.0}, "tags": {"map": 0.4},
            "c": {"err": 1.0, "score": 10.0}}
    new = {"cls": {"accuracy": 0.55, "top5": 0.88},   # both +10%         -> +10
           "reg": {"mae": 1.5, "mse": 100.0},         # mae -25% (better) -> +25; mse not counted
           "tags": {"map": 0.3},                      # -25%              -> -25
           "c": {"err": 1.2, "score": 11.0}}          # err +20% (worse) -20, score +10 -> -5
    report = delta_t(new, base, tasks)
    assert report.per_task["cls"] == pytest.approx(10.0)
    assert report.per_task["reg"] == pytest.approx(25.0)
    assert report.per_task["tags"] == pytest.approx(-25.0)
    assert report.per_task["c"] == pytest.approx(-5.0)
    assert report.delta_t == pytest.approx((10 + 25 - 25 - 5) / 4)
    with pytest.raises(ValueError, match="no metric that counts"):
        delta_t({"c": {}}, {"c": {}}, {"c": Task.custom(F.l1_loss).named("c")})


# --------------------------------------------------------------------------- saving


@pytest.mark.parametrize("spec", [
    Task.segmentation(13).named("seg"), Task.segmentation(4, ignore_index=0).named("seg"),
    Task.depth().named("depth"), Task.normal().named("normal"), Task.edge().named("edge"),
    Task.keypoint().named("kp"), Task.classification(10).named("cls"),
    Task.classification(3, ignore_index=255).named("cls"), Task.regression(3, loss="mse").named("reg"),
    Task.regression().named("reg"), Task.binary(6).named("tags"),
], ids=lambda s: f"{s.kind}-{s.channels}")
def test_round_trip(spec: TaskSpec) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    back = TaskSpec.from_dict(spec.name, data)
    assert back == spec
    assert (back.ignore_index, back.regression_loss) == (spec.ignore_index, spec.regression_loss)


def test_dense_specs_save_as_before() -> None:
    assert Task.segmentation(13).named("seg").to_dict() == {"kind": "segmentation", "channels": 13}
    assert Task.depth().named("depth").to_dict() == {"kind": "depth", "channels": 1}
    assert Task.classification(10).to_dict() == {"kind": "classification", "channels": 10, "ignore_index": -100}
    assert Task.regression(loss="mse").to_dict() == {"kind": "regression", "channels": 1, "regression_loss": "mse"}


def test_custom_round_trip_through_references() -> None:
    spec = Task.custom("torch.nn.functional:l1_loss", {"mse": ("torch.nn.functional:mse_loss", "lower")},
                       channels=2).named("c")
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {"kind": "custom", "channels": 2, "loss": "torch.nn.functional:l1_loss",
                    "metrics": {"mse": {"fn": "torch.nn.functional:mse_loss", "direction": "lower"}}}
    with trusting(True):  # functions named in saved data are imported only when trusted
        back = TaskSpec.from_dict("c", data)
    assert back == spec and back.loss_fn is F.l1_loss and back.custom_metrics == (("mse", F.mse_loss, False),)
    x, y = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert float(back.loss(x, y)) == pytest.approx(2.0)
    acc = back.accumulator()
    acc.update(x, y)
    assert acc.compute() == {"mse": pytest.approx(5.0)}


def test_custom_without_references_cannot_be_saved_and_bad_references_are_named() -> None:
    with pytest.raises(ValueError, match="importable \"module:function\""):
        Task.custom(F.l1_loss).named("c").to_dict()
    with pytest.raises(ValueError, match="'m'"):
        Task.custom("torch.nn.functional:l1_loss", {"m": (_batch_max, "lower")}).named("c").to_dict()
    with pytest.raises(ValueError, match="'torch.nn.functional:no_such_loss' does not import"), trusting(True):
        TaskSpec.from_dict("c", {"kind": "custom", "channels": 0, "loss": "torch.nn.functional:no_such_loss"})
    with pytest.raises(ValueError, match="no \"loss\" reference"):
        TaskSpec.from_dict("c", {"kind": "custom", "channels": 0})


def test_a_target_that_does_not_fit_its_output_is_named() -> None:
    """A 2-channel depth target for a 1-channel output used to broadcast silently in prune and finetune and
    to end in an IndexError in evaluate; now each refuses on the first batch, naming the task and shapes."""
    import taskcut
    from taskcut.errors import TaskcutError

    from . import own_models

    tasks = {"seg": Task.segmentation(6), "depth": Task.depth(), "normal": Task.normal()}
    data = own_models.batches(list(tasks))
    for batch in data:
        batch["depth"] = batch["depth"].repeat(1, 2, 1, 1)
    model = own_models.fpn()
    message = r"task 'depth': the target has shape \(4, 2, 32, 32\) for an output of shape \(4, 1, "
    with pytest.raises(TaskcutError, match=message):
        taskcut.prune_model(model, tasks, data, keep=["seg", "depth"], sparsity=0.5).model
    with pytest.raises(TaskcutError, match=message):
        taskcut.finetune_model(model, tasks, data, steps=1)
    with pytest.raises(TaskcutError, match=message):
        taskcut.evaluate_model(model, tasks, data)
    for batch in data:
        batch["depth"] = batch["depth"][:, :1]
        batch["seg"] = batch["seg"][:, None]  # a class map with a channel axis: one axis too many
    with pytest.raises(TaskcutError, match=r"task 'seg': .* a segmentation target is \(4, H, W\) class indices"):
        taskcut.evaluate_model(model, tasks, data)


def test_channel_cosine_is_torchs_cosine_similarity() -> None:
    """The fast cosine over channels gives torch's values and gradients, zero vectors included."""
    from taskcut.tasks.maps import channel_cosine

    torch.manual_seed(0)
    a = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    b = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    a[0, :, 0, 0] = 0.0  # a zero vector: torch floors its norm at eps
    for eps in (1e-8, 1e-12):
        x, y = a.clone().requires_grad_(), a.clone().requires_grad_()
        ours, theirs = channel_cosine(x, b, eps), F.cosine_similarity(y, b, dim=1, eps=eps)
        assert torch.allclose(ours, theirs, atol=1e-12)
        ours.sum().backward()
        theirs.sum().backward()
        assert torch.isfinite(x.grad).all() and torch.allclose(x.grad, y.grad, atol=1e-9)
