"""Dead parts of an own model: removed when no kept output reads them, kept when one does, and
recorded so a saved file rebuilds the same model; bad records in a file are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import taskcut
from taskcut import Task
from taskcut.cut.dead import MAX_ELEMENTS, Unused, dead_modules, remove_dead, restore_dead
from taskcut.errors import TaskcutError

from . import own_models

SEG = Task.segmentation(classes=6)


class WithPooler(nn.Module):
    """An encoder that also computes a pooled projection no task reads (as `transformers` poolers do)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pooler = nn.Linear(8, 4)
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(8, 6, 1), "depth": nn.Conv2d(8, 1, 1)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        pooled = self.pooler(f.mean(dim=(2, 3)))  # computed, never part of an output
        return {t: head(f) for t, head in self.heads.items()} | ({} if pooled is not None else {})


class ReadsByIndex(WithPooler):
    """The 'pooler' picks a channel by argmax: no gradient reaches it, yet the output depends on it."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        pick = self.pooler(f.mean(dim=(2, 3))).argmax(dim=1)
        f = f * (1 + pick.view(-1, 1, 1, 1).float())
        return {t: head(f) for t, head in self.heads.items()}


def with_pooler() -> nn.Module:
    torch.manual_seed(0)
    return WithPooler()


def test_unused_pooler_is_replaced_and_the_file_rebuilds_it(tmp_path: Path) -> None:
    model = with_pooler()
    data = own_models.batches(["seg", "depth"])
    x = data[0]["image"]
    assert dead_modules(model, x, ["seg", "depth"]) == ["pooler"]
    pruned = taskcut.prune_model(model, {"seg": SEG, "depth": Task.depth()}, data, keep=["seg"], sparsity=0.5)
    small = pruned.model
    assert isinstance(small.pooler, Unused)
    assert not any(n.startswith("pooler.") for n, _ in small.named_parameters())
    assert isinstance(model.pooler, nn.Linear)  # the original is untouched
    factory = "tests.test_dead_parts:with_pooler"
    again = taskcut.load(taskcut.save(pruned, tmp_path / "m.safetensors", factory=factory), trust=[factory])
    assert isinstance(again.pooler, Unused)
    with torch.no_grad():
        assert torch.equal(again.eval()(x)["seg"], small.eval()(x)["seg"])

    from typer.testing import CliRunner

    from taskcut.cli import app

    shown = CliRunner().invoke(app, ["info", str(tmp_path / "m.safetensors"), "--trust-code"])
    assert shown.exit_code == 0, shown.output
    assert "removed as unused" in shown.output and "pooler" in shown.output


def test_a_module_read_without_gradient_is_kept() -> None:
    torch.manual_seed(0)
    model = ReadsByIndex()
    x = own_models.batches(["seg"])[0]["image"]
    assert dead_modules(model, x, ["seg", "depth"]) == ["pooler"]  # autograd does not reach it...
    assert remove_dead(model, x, ["seg", "depth"]) == []  # ...but replacing it would change the outputs
    assert isinstance(model.pooler, nn.Linear)


@pytest.mark.parametrize("records, message", [
    ({"name": "pooler"}, "not a list"),
    (["pooler"], "records an unused module as"),
    ([{"name": "pooler", "shape": [-1]}], "of shape"),
    ([{"name": "pooler", "shape": [4] * 9}], "of shape"),
    ([{"name": "pooler", "shape": [MAX_ELEMENTS, 2]}], "elements"),
    ([{"name": "nowhere", "shape": [4]}], "has no module 'nowhere'"),
])
def test_bad_records_of_unused_modules_are_refused(records: object, message: str) -> None:
    model = with_pooler()
    with pytest.raises(TaskcutError, match=message):
        restore_dead(model, records)
    assert isinstance(model.pooler, nn.Linear)  # nothing replaced


class ZeroFeatures(nn.Module):
    """`cls` reads features multiplied by zero: its loss sends no gradient anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(8, 6, 1), "scene": nn.Linear(8, 7)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        inputs = {"seg": f, "scene": f.mean(dim=(2, 3)) * 0.0}
        return {t: head(inputs[t]) for t, head in self.heads.items()}


def test_a_task_without_gradient_names_the_layer_where_it_dies() -> None:
    torch.manual_seed(0)
    tasks = {"seg": SEG, "scene": Task.classification(classes=7)}
    with pytest.raises(TaskcutError, match=r"task 'scene' has no positive importance .*dies at heads\.scene"):
        taskcut.prune_model(ZeroFeatures(), tasks, own_models.batches(["seg", "scene"]), keep=["seg", "scene"],
                            sparsity=0.5).model
