"""Jobs return records (`TaskModel`): what saving, exporting and the next job need travels beside the
module, never on it, so a wrapped or plain module loses nothing and a module alone is never saved wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import taskcut
from taskcut import Task, TaskcutError, TaskModel

from . import own_models

FACTORY = "tests.own_models:fpn"
TASKS = {"seg": Task.segmentation(classes=6), "depth": Task.depth(), "normal": Task.normal()}


def _carried(model: nn.Module) -> list[str]:
    """Attributes taskcut would have put on the user's modules."""
    return [f"{name}.{key}" for name, module in model.named_modules() for key in vars(module)
            if key.startswith("taskcut")]


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        out_a, out_b = a.eval()(x), b.eval()(x)
    return list(out_a) == list(out_b) and all(torch.equal(out_a[k], out_b[k]) for k in out_a)


def test_prune_returns_a_record_and_leaves_nothing_on_the_module(tmp_path: Path) -> None:
    data = own_models.batches(list(TASKS))
    model = own_models.fpn().eval()
    pruned = taskcut.prune_model(model, TASKS, data, keep=["seg", "depth"], budget="params=0.5")
    assert isinstance(pruned, TaskModel)
    assert list(pruned.tasks) == ["seg", "depth"] and pruned.selection["mechanism"] == "delete"
    assert pruned.budget is not None and pruned.budget["reached"] <= pruned.budget["target"]
    assert _carried(pruned.model) == [] and _carried(model) == []
    # export and save take the record: its tasks and selection need not be given again
    record = taskcut.export_model(pruned, tmp_path / "m.onnx", example_input=data[0]["image"], evaluate=data[:1])
    assert set(record["evaluation"]["metrics"]) == {"seg", "depth"}
    path = taskcut.save(pruned, tmp_path / "m.safetensors", factory=FACTORY)
    again = taskcut.open_model(path, trust=[FACTORY])
    assert _carried(again.model) == []
    assert again.factory == FACTORY and again.selection == pruned.selection and list(again.tasks) == ["seg", "depth"]
    assert _same(pruned.model, again.model, data[0]["image"])


@pytest.mark.parametrize("keep", [["depth"], ["seg"]])
def test_a_saved_model_selected_again_rebuilds(keep: list[str], tmp_path: Path) -> None:
    """A file's record (already selected by deleting a head) selected again: both selections are recorded
    in order and the file rebuilds the model with one task."""
    data = own_models.batches(list(TASKS))
    x = data[0]["image"]
    pruned = taskcut.prune_model(own_models.fpn().eval(), TASKS, data, keep=["seg", "depth"], sparsity=0.5)
    opened = taskcut.open_model(taskcut.save(pruned, tmp_path / "two.safetensors", factory=FACTORY), trust=[FACTORY])
    one = taskcut.select(opened, keep, x)
    assert one.selection["mechanism"] == "steps" and list(one.tasks) == keep
    assert [s["tasks"] for s in one.selection["steps"]] == [["seg", "depth"], keep]
    path = taskcut.save(one, tmp_path / "one.safetensors")  # the factory comes from the record
    assert _same(one.model, taskcut.load(path, trust=[FACTORY]), x)


def test_finetune_gives_back_what_it_was_given() -> None:
    data = own_models.batches(list(TASKS))
    pruned = taskcut.prune_model(own_models.fpn().eval(), TASKS, data, keep=["seg"], sparsity=0.5)
    tuned = taskcut.finetune_model(pruned, pruned.tasks, data, steps=1)
    assert isinstance(tuned, TaskModel) and tuned.selection == pruned.selection
    assert isinstance(taskcut.finetune_model(pruned.model, pruned.tasks, data, steps=1), nn.Module)


def test_a_selected_module_saved_without_its_record_is_refused(tmp_path: Path) -> None:
    """The module alone does not say which heads were removed: saving it would write a file that does not
    load. Refused in one line, nothing written."""
    data = own_models.batches(list(TASKS))
    small = taskcut.select(own_models.fpn().eval(), ["seg"], data[0]["image"]).model
    out = tmp_path / "bare.safetensors"
    with pytest.raises(TaskcutError, match="save the record") as err:
        taskcut.save(small, out, factory=FACTORY)
    assert "\n" not in str(err.value) and not out.exists()


def test_a_file_recording_too_many_selection_steps_is_refused(tmp_path: Path) -> None:
    """The selection a file records is data: its list of steps is bounded before anything replays it."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    data = own_models.batches(list(TASKS))
    pruned = taskcut.prune_model(own_models.fpn().eval(), TASKS, data, keep=["seg", "depth"], sparsity=0.5)
    path = taskcut.save(pruned, tmp_path / "m.safetensors", factory=FACTORY)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    spec = json.loads(meta["taskcut"])
    spec["selection"] = {"mechanism": "steps", "tasks": ["seg"], "steps": [{"mechanism": "none"}] * 100_000}
    forged = tmp_path / "forged.safetensors"
    save_file(tensors, str(forged), metadata={"taskcut": json.dumps(spec)})
    with pytest.raises(TaskcutError, match="selection recorded in the model file is malformed"):
        taskcut.load(forged, trust=[FACTORY])
