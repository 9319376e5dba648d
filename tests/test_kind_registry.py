"""A task kind defined here, without touching taskcut's files, registers like the built-in ones and goes
through prune, finetune with distillation, evaluate (with the control), compare and its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import taskcut
from taskcut.cli import app
from taskcut.tasks import Metric, MetricAccumulator, TaskSpec
from taskcut.tasks.kinds import KINDS, Kind

runner = CliRunner()
#: How often each of the kind's functions ran (the CLI runs in this process).
CALLS = {"loss": 0, "distill": 0, "accumulate": 0}


class CountError(MetricAccumulator):
    def __init__(self) -> None:
        self.total, self.images = 0.0, 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        CALLS["accumulate"] += 1
        self.total += float((pred[:, 0] - target.float()).abs().sum())
        self.images += int(target.shape[0])

    def compute(self) -> dict[str, float]:
        return {"count_mae": self.total / max(1, self.images)}


class Counting(Kind):
    """How many objects an image holds: one value per image, trained with L1, judged by its MAE."""

    name = "counting"
    fixed_channels = 1

    def metrics(self, spec: TaskSpec) -> tuple[Metric, ...]:
        return (Metric("count_mae", False),)

    def loss(self, spec: TaskSpec, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        CALLS["loss"] += 1
        return (pred[:, 0] - target.float()).abs().mean()

    def accumulator(self, spec: TaskSpec, convention: str) -> MetricAccumulator:
        return CountError()

    def distill_loss(self, spec: TaskSpec, student: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        CALLS["distill"] += 1
        return (student - teacher).abs().mean()

    def blind_predictors(self, spec: TaskSpec, train_targets: np.ndarray) -> dict[str, torch.Tensor]:
        return {"mean_count": torch.tensor([float(train_targets.mean())])}


class Net(nn.Module):
    """A trunk shared by segmentation and counting."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                   nn.ReLU())
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(16, 3, 1),
                                    "count": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        return {task: head(f) for task, head in self.heads.items()}


def net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


def data() -> dict[str, list[dict[str, torch.Tensor]]]:
    def split(seed: int) -> list[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        return [{"image": torch.rand(4, 3, 16, 16, generator=g), "seg": torch.randint(0, 3, (4, 16, 16), generator=g),
                 "count": torch.randint(1, 6, (4,), generator=g)} for _ in range(3)]
    return {"train": split(0), "val": split(1), "test": split(2)}


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"factory": "tests.test_kind_registry:net"},
        "tasks": {"seg": {"kind": "segmentation", "classes": 3},
                  "count": {"kind": "tests.test_kind_registry:Counting"}},
        "data": {"factory": "tests.test_kind_registry:data"}}, sort_keys=False))
    return path


def _ok(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_kind_defined_here_goes_through_every_job(config: Path, tmp_path: Path) -> None:
    KINDS.pop("counting", None)  # registered by the YAML's reference, as a user's kind would be
    small, tuned = tmp_path / "small.safetensors", tmp_path / "tuned.safetensors"
    _ok("prune", "--config", config, "--tasks", "count", "--sparsity", "0.5", "--batches", "2", "--out", small,
        "--quiet")
    assert "counting" in KINDS and CALLS["loss"] > 0  # scored on the kind's own loss
    saved = taskcut.models.read_spec(small)["tasks"]["count"]
    assert saved["kind"] == "counting" and saved["kind_ref"] == "tests.test_kind_registry:Counting"

    before = dict(CALLS)
    _ok("finetune", small, "--config", config, "--steps", "2", "--val-every", "1", "--distill", "--out", tuned,
        "--quiet")
    assert CALLS["distill"] > before["distill"] and CALLS["loss"] > before["loss"]

    report_path = tmp_path / "eval.json"
    _ok("evaluate", tuned, "--config", config, "--baseline", "base", "--out", report_path, "--quiet")
    report = json.loads(report_path.read_text())
    assert set(report["metrics"]) == {"count"} and "count_mae" in report["metrics"]["count"]
    assert report["baseline"]["delta_T"] is not None and "delta_T" in report["control"]

    out = tmp_path / "cmp"
    _ok("compare", "--config", config, "--tasks", "seg,count", "--methods", "cut,magnitude", "--sparsities", "0.5",
        "--seeds", "0", "--finetune-steps", "2", "--finetunes", "distill", "--batches", "2", "--out", out, "--quiet")
    results = (out / "results.md").read_text()
    assert "count count_mae" in results and "cut+distill" in results
    assert "count" in (out / "report.html").read_text()


def test_a_saved_kind_is_code_a_file_names(config: Path, tmp_path: Path) -> None:
    """A file naming a user's kind is data: opening it imports the kind only when trusted."""
    from taskcut.errors import TaskcutError
    from taskcut.tasks.kinds import register

    register(Counting())
    spec = TaskSpec("count", "counting", 1)
    model = tmp_path / "m.safetensors"
    taskcut.save(net(), model, factory="tests.test_kind_registry:net",
                 tasks={"seg": taskcut.Task.segmentation(3).named("seg"), "count": spec})
    KINDS.pop("counting")
    with pytest.raises(TaskcutError, match="names code to run"):
        taskcut.load(model)
    with pytest.raises(TaskcutError, match="tests.test_kind_registry:Counting"):  # the factory alone is not enough
        taskcut.load(model, trust=["tests.test_kind_registry:net"])
    assert "counting" not in KINDS
    loaded = taskcut.load(model, trust=True)
    assert "counting" in KINDS and set(loaded(torch.rand(1, 3, 16, 16))) == {"seg", "count"}


def test_a_kind_is_refused_in_one_line_when_it_is_not_one(tmp_path: Path) -> None:
    from taskcut.tasks.kinds import load_kind, register

    with pytest.raises(ValueError, match="not a Kind subclass"):
        load_kind("tests.test_kind_registry:Net")
    with pytest.raises(ValueError, match="unknown kind 'nonesuch'"):
        TaskSpec("x", "nonesuch", 1)

    class Other(Kind):
        name = "segmentation"

    with pytest.raises(ValueError, match="already registered"):
        register(Other())


def test_a_trusted_kind_reference_does_not_let_a_custom_task_run_untrusted_code(tmp_path: Path) -> None:
    """A saved task naming both a kind (trusted) and custom functions (not trusted) is refused: trusting
    one reference of a file trusts nothing else it names."""
    from taskcut.errors import TaskcutError
    from taskcut.trust import require_trusted, task_references, trusting

    data = {"kind": "custom", "channels": 1, "kind_ref": "tests.test_kind_registry:Counting",
            "loss": "os:system", "metrics": {}}
    refs = task_references("count", data)
    assert ("task 'count' loss", "os:system") in refs and ("task 'count' kind", data["kind_ref"]) in refs
    with trusting(["tests.test_kind_registry:Counting"]), pytest.raises(TaskcutError, match="os:system"):
        require_trusted(refs, "the saved task 'count'")
