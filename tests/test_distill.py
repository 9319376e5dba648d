"""Distillation from the dense model while fine-tuning: losses per task kind, the training loop, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.config import DistillConfig, TrainConfig
from taskcut.cut.select import select
from taskcut.data.dataset import open_for_tasks
from taskcut.errors import TaskcutError
from taskcut.models import build_model, read_spec, save
from taskcut.tasks.dense import TaskSpec
from taskcut.train.distill import FEATURES, Teacher, distill_loss
from taskcut.train.fit import fit

from .conftest import tiny_model_config

runner = CliRunner()
KINDS = {
    "seg": (TaskSpec("seg", "segmentation", 5), (2, 5, 4, 4)),
    "cls": (TaskSpec("cls", "classification", 4), (2, 4)),
    "bin": (TaskSpec("bin", "binary", 3), (2, 3)),
    "normal": (TaskSpec("normal", "normal", 3), (2, 3, 4, 4)),
    "depth": (TaskSpec("depth", "depth", 1), (2, 1, 4, 4)),
    "edge": (TaskSpec("edge", "edge", 1), (2, 1, 4, 4)),
    "reg": (TaskSpec("reg", "regression", 2), (2, 2)),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_is_zero_at_the_teacher_and_pulls_towards_it(name: str) -> None:
    spec, shape = KINDS[name]
    torch.manual_seed(0)
    teacher = torch.randn(shape)
    assert float(distill_loss(spec, teacher.clone(), teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(shape, requires_grad=True)
    before = distill_loss(spec, student, teacher, 2.0)
    assert float(before) > 1e-3
    before.backward()
    with torch.no_grad():
        stepped = student - 0.05 * student.grad
    assert float(distill_loss(spec, stepped, teacher, 2.0)) < float(before)


def test_shapes_must_match() -> None:
    spec, shape = KINDS["depth"]
    with pytest.raises(TaskcutError, match="same output shape"):
        distill_loss(spec, torch.zeros(shape), torch.zeros(2, 1, 8, 8))


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save(build_model(tiny_model_config()).eval(), tmp_path_factory.mktemp("distill") / "base.safetensors")


def _gap(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, task: str) -> float:
    with torch.no_grad():
        return float((student.eval()(images)[task] - teacher.eval()(images)[task]).abs().mean())


def test_a_distilled_student_moves_towards_its_teacher(dense: Path, synth_dir: Path) -> None:
    """From the same start and batches, distillation ends nearer the dense model's outputs than labels alone."""
    data = f"synth:{synth_dir}"
    teacher = select(load(dense), ["depth"]).model
    specs = teacher.config.task_specs()
    train, val = (open_for_tasks(data, s, specs) for s in ("train", "val"))
    images = train.batch(torch.arange(8))["image"]
    ends = {}
    for recipe in ("plain", "distill"):
        torch.manual_seed(1)
        student = build_model(tiny_model_config({"depth": {"kind": "depth", "channels": 1}}))
        settings = DistillConfig(weight=20.0) if recipe == "distill" else None
        cfg = TrainConfig(steps=12, batch_size=4, lr=3e-3, val_every=12, distill=settings)
        taught = Teacher(select(load(dense), ["depth"]).model, settings, specs) if settings else None
        fit(student, specs, {}, cfg, train, val, show_progress=False, teacher=taught)
        ends[recipe] = _gap(student, teacher, images, "depth")
    assert ends["distill"] < 0.8 * ends["plain"], ends


def test_trunk_features_need_the_same_channels(dense: Path, synth_dir: Path) -> None:
    teacher = Teacher(select(load(dense), ["seg"]).model, DistillConfig(features=1.0), select(load(dense), ["seg"]).model.config.task_specs())
    same = select(load(dense), ["seg"]).model
    teacher.attach(same)
    image = torch.rand(2, 3, 32, 32)
    losses = teacher.losses(image, same(image))
    assert set(losses) == {"seg", FEATURES} and float(losses[FEATURES]) == pytest.approx(0.0, abs=1e-8)
    teacher.detach()
    narrow = build_model(tiny_model_config({"seg": {"kind": "segmentation", "channels": 6}}).model_copy(
        update={"width": 0.0625}))
    teacher.attach(narrow)
    with pytest.raises(TaskcutError, match="trunk features differ"):
        teacher.losses(image, narrow(image))


def test_fit_refuses_half_a_distillation(dense: Path, synth_dir: Path) -> None:
    model = select(load(dense), ["seg"]).model
    specs = model.config.task_specs()
    train = open_for_tasks(f"synth:{synth_dir}", "train", specs)
    with pytest.raises(TaskcutError, match="needs both"):
        fit(model, specs, {}, TrainConfig(steps=1, batch_size=4, distill=DistillConfig()), train, None,
            show_progress=False)


def _pruned(dense: Path, synth_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "compact.safetensors"
    result = runner.invoke(app, ["prune", str(dense), "--tasks", "seg,depth", "--sparsity", "0.5", "--data",
                                 f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_finetune_distill_records_it_and_its_control_follows(dense: Path, synth_dir: Path, tmp_path: Path) -> None:
    compact = _pruned(dense, synth_dir, tmp_path)
    tuned = tmp_path / "tuned.safetensors"
    args = ["finetune", str(compact), "--data", f"synth:{synth_dir}", "--steps", "2", "--batch-size", "4",
            "--val-every", "1", "--quiet", "--out", str(tuned)]
    result = runner.invoke(app, [*args, "--distill", "--distill-weight", "0.5"])
    assert result.exit_code == 0, result.output
    ft = read_spec(tuned)["provenance"]["finetune"]
    assert ft["distill"] == {"weight": 0.5, "temperature": 1.0, "features": 0.0}
    report = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(tuned), "--data", f"synth:{synth_dir}", "--baseline", str(dense),
                                 "--out", str(report), "--quiet"])
    assert result.exit_code == 0, result.output
    control = read_spec(Path(json.loads(report.read_text())["control"]["model"]))["provenance"]["control"]
    assert control["train"]["distill"]["weight"] == 0.5  # the control was fine-tuned with the same distillation


@pytest.mark.parametrize("extra,match", [
    (["--distill", "--distill-weight", "0"], "--distill-weight: Input should be greater than 0"),
    (["--distill-weight", "2"], "need --distill"),
    (["--teacher", "x.safetensors"], "need --distill"),
    (["--distill", "--teacher", "{missing}"], "does not exist|No such file"),
])
def test_bad_distillation_inputs_are_one_line(dense: Path, synth_dir: Path, tmp_path: Path, extra: list,
                                              match: str) -> None:
    compact = _pruned(dense, synth_dir, tmp_path)
    tuned = tmp_path / "tuned.safetensors"
    extra = [e.replace("{missing}", str(tmp_path / "gone.safetensors")) for e in extra]
    result = runner.invoke(app, ["finetune", str(compact), "--data", f"synth:{synth_dir}", "--steps", "1",
                                 "--batch-size", "4", "--quiet", "--out", str(tuned), *extra])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and __import__("re").search(match, result.output)
    assert not tuned.exists()


def test_a_teacher_that_changed_is_refused(dense: Path, synth_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.safetensors"
    base.write_bytes(dense.read_bytes())
    compact = _pruned(base, synth_dir, tmp_path)
    torch.manual_seed(5)
    save(build_model(tiny_model_config()), base)  # other weights under the same name
    tuned = tmp_path / "tuned.safetensors"
    result = runner.invoke(app, ["finetune", str(compact), "--data", f"synth:{synth_dir}", "--steps", "1",
                                 "--batch-size", "4", "--quiet", "--distill", "--out", str(tuned)])
    assert result.exit_code == 2 and "changed since" in result.output, result.output
    assert not tuned.exists()


def test_the_api_needs_a_distinct_teacher(dense: Path, synth_dir: Path) -> None:
    import taskcut

    model = select(load(dense), ["depth"]).model
    specs = model.config.task_specs()
    batches = [open_for_tasks(f"synth:{synth_dir}", "train", specs).batch(torch.arange(4))]
    with pytest.raises(TaskcutError, match="not the model being fine-tuned"):
        taskcut.finetune_model(model, specs, batches, steps=1, teacher=model)
    with pytest.raises(TaskcutError, match="need a teacher"):
        taskcut.finetune_model(model, specs, batches, steps=1, distill={"weight": 1.0})
    teacher = select(load(dense), ["depth"]).model
    with pytest.raises(TaskcutError, match="distill\\['wieght'\\]: Extra inputs are not permitted"):
        taskcut.finetune_model(model, specs, batches, steps=1, teacher=teacher, distill={"wieght": 1.0})
