"""Own models from the command line (a YAML naming factories) and every bad input the issue names:
one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

import taskcut
from taskcut import Task
from taskcut.cli import app
from taskcut.errors import TaskcutError

from . import own_models

runner = CliRunner()
TASKS = {"seg": {"kind": "segmentation", "classes": 6}, "depth": {"kind": "depth"}, "normal": {"kind": "normal"}}


def _config(tmp: Path, **changes) -> Path:
    weights = tmp / "base.safetensors"
    if not weights.exists():
        save_file({k: v.contiguous() for k, v in own_models.fpn().state_dict().items()}, str(weights))
    cfg = {"model": {"factory": "tests.own_models:fpn", "kwargs": {"width": 8}, "weights": "base.safetensors"},
           "tasks": TASKS, "data": {"factory": "tests.own_models:data", "kwargs": {"tasks": list(TASKS)}}}
    for key, value in changes.items():
        cfg[key] = value
    path = tmp / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _ok(*args: str) -> str:
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_prune_finetune_evaluate_export_bench_from_yaml(tmp_path: Path) -> None:
    config = _config(tmp_path)
    small, tuned = tmp_path / "small.safetensors", tmp_path / "tuned.safetensors"
    _ok("prune", "--config", config, "--tasks", "seg,depth", "--sparsity", "0.7", "--out", small, "--quiet")
    spec = taskcut.models.read_spec(small)
    assert spec["model"]["factory"] == "tests.own_models:fpn" and set(spec["tasks"]) == {"seg", "depth"}
    _ok("finetune", small, "--config", config, "--steps", "2", "--val-every", "1", "--out", tuned, "--quiet")
    report_path = tmp_path / "eval.json"
    _ok("evaluate", tuned, "--config", config, "--baseline", "base", "--out", report_path)
    report = json.loads(report_path.read_text())
    assert set(report["metrics"]) == {"seg", "depth"} and "delta_T" in report["baseline"]
    # the control: the YAML's base on the same tasks, fine-tuned with the same 2 steps (cached)
    assert "delta_T" in report["control"] and report["control"]["finetune"]["steps"] == 2
    control = taskcut.load(report["control"]["model"], trust=True)
    assert list(control(torch.rand(1, 3, 32, 32))) == ["seg", "depth"]
    assert taskcut.models.read_spec(report["control"]["model"])["provenance"]["control"]["tasks"] == ["seg", "depth"]
    _ok("evaluate", tuned, "--config", config, "--baseline", "base", "--no-control", "--out", report_path, "--force")
    assert "control" not in json.loads(report_path.read_text())
    _ok("export", tuned, "--config", config, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 0
    output = _ok("bench", tuned, "--vs", small, "--runtime", "onnxruntime", "--size", "32", "32", "--runs", "2",
                 "--json", "--trust-code")  # bench has no --config: the user says they trust their files
    stats = json.loads(output)
    assert stats["model"]["tasks"] == ["seg", "depth"] and stats["ratios"]["nonzero_parameters"] > 0
    assert "own model from tests.own_models:fpn" in _ok("info", tuned, "--trust-code")


def _fails(args: list, match: str, written: Path) -> None:
    result = runner.invoke(app, [*map(str, args)])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and match in lines[0], result.output
    assert not written.exists()


def test_a_factory_that_does_not_import_is_named(tmp_path: Path) -> None:
    config = _config(tmp_path, model={"factory": "tests.no_such_module:build"})
    out = tmp_path / "o.safetensors"
    _fails(["prune", "--config", config, "--tasks", "seg", "--sparsity", "0.5", "--out", out],
           "tests.no_such_module:build", out)


def test_outputs_that_do_not_match_the_tasks_name_both_lists(tmp_path: Path) -> None:
    config = _config(tmp_path, tasks={"seg": TASKS["seg"], "depth": TASKS["depth"]})
    out = tmp_path / "o.safetensors"
    _fails(["prune", "--config", config, "--tasks", "seg", "--sparsity", "0.5", "--out", out],
           "outputs ['depth', 'normal', 'seg'] do not match the declared tasks ['depth', 'seg']", out)


def test_a_task_without_a_loss(tmp_path: Path) -> None:
    config = _config(tmp_path, tasks={**TASKS, "normal": {}})
    out = tmp_path / "o.safetensors"
    _fails(["prune", "--config", config, "--tasks", "seg", "--sparsity", "0.5", "--out", out],
           "task 'normal' has no kind and no loss", out)
    with pytest.raises((TaskcutError, ValueError), match="loss"):
        Task.custom(loss=None)


def test_a_batch_missing_a_target_names_the_key(tmp_path: Path) -> None:
    config = _config(tmp_path, data={"factory": "tests.own_models:data", "kwargs": {"tasks": ["seg", "normal"]}})
    out = tmp_path / "o.safetensors"
    _fails(["prune", "--config", config, "--tasks", "seg,depth", "--sparsity", "0.5", "--out", out],
           "a batch has no target for task(s) depth", out)


def test_attention_that_cannot_be_cut_is_reported_not_broken(capsys: pytest.CaptureFixture) -> None:
    """A forward that hard-codes its head layout: the coupled channels stay whole, are listed, and the model runs."""
    model = own_models.hard_coded().eval()
    tasks = {"seg": Task.segmentation(classes=6), "depth": Task.depth()}
    data = own_models.batches(["seg", "depth"])
    small = taskcut.prune_model(model, tasks, data, keep=["seg", "depth"], sparsity=0.25, structured=True, round_to=1).model
    assert "left whole" in capsys.readouterr().err
    assert small.qkv.out_features == 96  # the head layout is intact
    with torch.no_grad():
        out, full = small(data[0]["image"]), model(data[0]["image"])
    assert all(out[t].shape == full[t].shape for t in tasks)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_model_that_no_longer_runs_is_an_error() -> None:
    from taskcut.compact.structured import _check_runs

    with pytest.raises(TaskcutError, match="structured pruning left HardCodedHeads unable to run"):
        broken = own_models.hard_coded()
        broken.qkv = torch.nn.Linear(32, 90)
        _check_runs(broken, torch.rand(1, 3, 32, 32))


def test_prune_an_own_model_to_a_budget_from_yaml(tmp_path: Path) -> None:
    config = _config(tmp_path)
    out = tmp_path / "small.safetensors"
    output = _ok("prune", "--config", config, "--tasks", "seg,depth", "--budget", "params=0.3", "--out", out, "--quiet")
    assert "budget params <= 0.3 x the dense model: reached" in output
    report = taskcut.models.read_spec(out)["provenance"]["budget_report"]
    assert 0.97 <= report["ratio"] <= 1.0


#: Every option an own model's --config run cannot apply, per command: refused in one line, never ignored.
REFUSED = {
    "prune": [["--data", "synth:x"]],
    "finetune": [["--data", "synth:x"], ["--preset", "nyuv2"]],
    "evaluate": [["--data", "synth:x"]],
    "export": [["--data", "synth:x"], ["--size", "32", "32"]],
    "compare": [["--data", "synth:x"]],
}


@pytest.mark.parametrize("command, option", [(c, o) for c, opts in REFUSED.items() for o in opts],
                         ids=lambda v: v if isinstance(v, str) else v[0])
def test_options_that_cannot_apply_to_an_own_model_are_refused(tmp_path: Path, command: str, option: list) -> None:
    config = _config(tmp_path)
    out = tmp_path / "out.safetensors"
    model = tmp_path / "small.safetensors"
    args = {"prune": ["prune", "--config", config, "--tasks", "seg", "--sparsity", "0.5", "--out", out],
            "finetune": ["finetune", model, "--config", config, "--steps", "1", "--out", out],
            "evaluate": ["evaluate", model, "--config", config, "--baseline", "base", "--out", tmp_path / "e.json"],
            "export": ["export", model, "--config", config, "--out", tmp_path / "m.onnx"],
            "compare": ["compare", "--config", config, "--tasks", "seg", "--out", out]}[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    _fails([*args, *option], f"{option[0]} does not apply with an own model's --config", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_score_once_then_prune_subsets_from_the_file(tmp_path: Path) -> None:
    """An own model is scored once (`score --config`); `prune --config --scores` then prunes any subset with
    the masks that scoring the subset itself gives, and refuses a file made for another base."""
    from taskcut.compact.masking import masks_of

    config = _config(tmp_path)
    scores = tmp_path / "scores.safetensors"
    _ok("score", "--config", config, "--batches", "2", "--out", scores, "--quiet")
    for subset in ("seg,depth", "normal"):
        from_file, direct = tmp_path / f"f-{subset}.safetensors", tmp_path / f"d-{subset}.safetensors"
        _ok("prune", "--config", config, "--tasks", subset, "--sparsity", "0.6", "--scores", scores,
            "--out", from_file, "--quiet")
        _ok("prune", "--config", config, "--tasks", subset, "--sparsity", "0.6", "--batches", "2",
            "--out", direct, "--quiet")
        a, b = masks_of(taskcut.load(from_file, trust=True)), masks_of(taskcut.load(direct, trust=True))
        assert set(a) == set(b) and all(bool((a[n] == b[n]).all()) for n in a), subset
    _fails(["prune", "--config", config, "--tasks", "seg", "--sparsity", "0.6", "--scores", scores, "--batches", "3",
            "--out", tmp_path / "x.safetensors"], "--batches 3", tmp_path / "x.safetensors")
    other = yaml.safe_load(config.read_text())
    other["model"]["kwargs"] = {"width": 16}  # another base model
    save_file({k: v.contiguous() for k, v in own_models.fpn(16).state_dict().items()}, str(tmp_path / "w16.safetensors"))
    other["model"]["weights"] = "w16.safetensors"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    _fails(["prune", "--config", tmp_path / "other.yaml", "--tasks", "seg", "--sparsity", "0.6", "--scores", scores,
            "--out", tmp_path / "x.safetensors"], "scores of another base model", tmp_path / "x.safetensors")


def test_finetune_an_own_model_with_a_batch_size_and_a_teacher(tmp_path: Path) -> None:
    """`--batch-size` re-batches the data factory's batches; `--teacher` replaces the YAML's base as teacher.
    Each changes the weights the run ends with, and the file records it."""
    config = _config(tmp_path)
    small = tmp_path / "small.safetensors"
    _ok("prune", "--config", config, "--tasks", "seg,depth", "--sparsity", "0.5", "--out", small, "--quiet")
    runs = {"plain": [], "batch": ["--batch-size", "3"], "distill": ["--distill"]}
    torch.manual_seed(1)
    other = own_models.FPN(8)  # a teacher with other weights than the YAML's base
    teacher = taskcut.save(other, tmp_path / "teacher.safetensors", factory="tests.own_models:fpn",
                           kwargs={"width": 8})
    runs["teacher"] = ["--distill", "--teacher", str(teacher)]
    weights = {}
    for name, extra in runs.items():
        out = tmp_path / f"run-{name}.safetensors"
        _ok("finetune", small, "--config", config, "--steps", "3", "--val-every", "3", "--out", out, "--quiet", *extra)
        weights[name] = taskcut.load(out, trust=True).state_dict()
        schedule = taskcut.models.read_spec(out)["provenance"]["finetune"]
        assert schedule.get("batch_size") == (3 if name == "batch" else None)
        assert schedule.get("teacher") == (str(teacher) if name == "teacher" else None)
    differ = lambda a, b: any(not torch.equal(weights[a][k], weights[b][k]) for k in weights[a])  # noqa: E731
    assert differ("plain", "batch") and differ("distill", "teacher")
    # the control is fine-tuned like the model: re-batched the same way
    _ok("evaluate", tmp_path / "run-batch.safetensors", "--config", config, "--baseline", "base", "--out",
        tmp_path / "e.json")
    control = json.loads((tmp_path / "e.json").read_text())["control"]
    assert control["finetune"]["batch_size"] == 3
    recorded = taskcut.models.read_spec(control["model"])["provenance"]["control"]["finetune"]
    assert recorded["batch_size"] == 3


def test_rebatching_keeps_every_image_in_order() -> None:
    from taskcut.api import Rebatched

    source = own_models.batches(["seg"], n=3, size=4)  # 12 images in batches of 4
    again = list(Rebatched(source, 5))
    assert [len(b["image"]) for b in again] == [5, 5, 2]
    assert torch.equal(torch.cat([b["image"] for b in again]), torch.cat([b["image"] for b in source]))
    assert torch.equal(torch.cat([b["seg"] for b in again]), torch.cat([b["seg"] for b in source]))
    with pytest.raises(TaskcutError, match="same first"):
        list(Rebatched([{"image": torch.zeros(2, 3), "seg": torch.zeros(3)}], 2))
    for size in (0, 10 ** 9, True, 2.5):  # a size from a file's recorded schedule is bounded before use
        with pytest.raises(TaskcutError, match="batch size must be an integer from 1 to"):
            Rebatched(source, size)


def test_resumed_own_finetuning_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    """A run over a data factory's batches checkpoints (every 3 of 6 steps); a fresh copy resumed from
    the step-3 checkpoint ends with the uninterrupted run's weights, masks and all."""
    import copy

    from taskcut.compact.masking import masks_of

    tasks = {"seg": Task.segmentation(classes=6), "depth": Task.depth()}
    data = own_models.data(["seg", "depth"])
    small = taskcut.prune_model(own_models.fpn(), {**tasks, "normal": Task.normal()}, data["train"],
                                keep=["seg", "depth"], sparsity=0.5).model
    start = copy.deepcopy(small)
    ckpt = tmp_path / "run.ckpt"
    whole = taskcut.finetune_model(small, tasks, data["train"], steps=6, val_batches=data["val"], val_every=2,
                                   lr=1e-3, checkpoint=ckpt, checkpoint_every=3)
    assert ckpt.is_file()  # the step-3 checkpoint (the API leaves it; the CLI removes it once done)
    resumed = taskcut.finetune_model(start, tasks, data["train"], steps=6, val_batches=data["val"], val_every=2,
                                     lr=1e-3, checkpoint=ckpt, checkpoint_every=3, resume=True)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert masks_of(resumed).keys() == masks_of(start).keys()
    fresh = copy.deepcopy(start)  # not resumed: another run, other weights (the test can tell them apart)
    taskcut.finetune_model(fresh, tasks, data["train"], steps=3, val_batches=data["val"], val_every=2, lr=1e-3)
    assert any(not torch.equal(a[k], fresh.state_dict()[k]) for k in a)


def test_finetune_an_own_model_resumably_from_the_command_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    small, out = tmp_path / "small.safetensors", tmp_path / "tuned.safetensors"
    _ok("prune", "--config", config, "--tasks", "seg", "--sparsity", "0.5", "--out", small, "--quiet")
    _fails(["finetune", small, "--config", config, "--steps", "4", "--out", out, "--resume"], "no checkpoint", out)
    _ok("finetune", small, "--config", config, "--steps", "4", "--checkpoint-every", "2", "--out", out, "--quiet")
    assert out.is_file() and not out.with_name(out.name + ".ckpt").exists()  # removed once the model is written
