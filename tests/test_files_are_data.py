"""A model file is data: opening one never imports or calls code it names unless the user trusts it.

The crafted files name callables that would leave a marker file if they ran; every command
that opens a model file and `taskcut.load` must refuse them in one line, exit 2, with the
marker never created. The user's own model files still load with their --config, or with
--trust-code / `trust=True`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

import taskcut
from taskcut.cli import app
from taskcut.errors import TaskcutError
from taskcut.trust import UntrustedCode

from . import own_models

runner = CliRunner()
TASKS = {"seg": {"kind": "segmentation", "classes": 6}, "depth": {"kind": "depth"}, "normal": {"kind": "normal"}}


def _crafted(tmp: Path, name: str, marker: Path) -> Path:
    """A model file whose factory, called with its kwargs, would create `marker`."""
    calls = {
        "subprocess": ("subprocess:run", {"args": ["sh", "-c", f"touch {marker}"]}),
        "os": ("os:system", {"command": f"touch {marker}"}),
        "exec": ("builtins:exec", {"source": f"open({str(marker)!r}, 'w').close()"}),
    }
    factory, kwargs = calls[name]
    spec = {"format": "taskcut.model", "version": 1, "model": {"factory": factory, "kwargs": kwargs},
            "tasks": {"seg": {"kind": "segmentation", "channels": 6}}, "selection": {"mechanism": "none"},
            "structure": {}, "masked": {}, "provenance": {}}
    path = tmp / f"{name}.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"taskcut": json.dumps(spec)})
    return path


def _crafted_task(tmp: Path, marker: Path) -> Path:
    """A trusted-looking own file whose custom task's loss names code."""
    spec = {"format": "taskcut.model", "version": 1,
            "model": {"factory": "tests.own_models:fpn", "kwargs": {"width": 8}},
            "tasks": {"seg": {"kind": "custom", "channels": 6, "loss": "os:system", "metrics": {}}},
            "selection": {"mechanism": "none"}, "structure": {}, "masked": {}, "provenance": {}}
    path = tmp / "task.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"taskcut": json.dumps(spec)})
    return path


COMMANDS = {
    "info": lambda f, t: ["info", f],
    "evaluate": lambda f, t: ["evaluate", f, "--data", f"synth:{t}"],
    "export": lambda f, t: ["export", f, "--out", t / "m.onnx"],
    "bench": lambda f, t: ["bench", f, "--runs", "1", "--size", "32", "32"],
    "finetune": lambda f, t: ["finetune", f, "--data", f"synth:{t}", "--out", t / "tuned.safetensors"],
    "prune": lambda f, t: ["prune", f, "--tasks", "seg", "--sparsity", "0.5", "--data", f"synth:{t}",
                           "--out", t / "small.safetensors"],
    "score": lambda f, t: ["score", f, "--data", f"synth:{t}", "--out", t / "scores.safetensors"],
}


@pytest.mark.parametrize("call", ["subprocess", "os", "exec"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_crafted_factory_runs_nothing(tmp_path: Path, call: str, command: str) -> None:
    marker = tmp_path / "MARKER"
    crafted = _crafted(tmp_path, call, marker)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, [str(a) for a in COMMANDS[command](crafted, tmp_path)])
    assert result.exit_code == 2, result.output
    assert not marker.exists()
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "names code to run" in message and "--trust-code" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("call", ["subprocess", "os", "exec"])
def test_load_refuses_before_importing(tmp_path: Path, call: str, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "MARKER"
    crafted = _crafted(tmp_path, call, marker)
    module = {"subprocess": "subprocess", "os": "os", "exec": "builtins"}[call]
    imported = []
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    with pytest.raises(UntrustedCode, match="names code to run"):
        taskcut.load(crafted)
    assert not marker.exists() and module not in imported


def test_custom_task_reference_is_code_too(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _crafted_task(tmp_path, marker)
    with pytest.raises(UntrustedCode, match="os:system"):
        taskcut.load(path, trust=["tests.own_models:fpn"])  # the factory trusted, the task's loss not
    with pytest.raises(UntrustedCode):
        taskcut.Task.from_dict("seg", {"kind": "custom", "channels": 6, "loss": "os:system"})


def test_trusted_crafted_file_is_the_users_choice(tmp_path: Path) -> None:
    """--trust-code really imports: the refusal above is the trust check, not a broken reference."""
    marker = tmp_path / "MARKER"
    crafted = _crafted(tmp_path, "os", marker)
    result = runner.invoke(app, ["info", str(crafted), "--trust-code"])
    assert marker.exists() and result.exit_code == 2  # it ran, then failed: os.system returns no module


def _own_setup(tmp: Path) -> tuple[Path, Path]:
    weights = tmp / "base.safetensors"
    save_file({k: v.contiguous() for k, v in own_models.fpn().state_dict().items()}, str(weights))
    cfg = {"model": {"factory": "tests.own_models:fpn", "kwargs": {"width": 8}, "weights": "base.safetensors"},
           "tasks": TASKS, "data": {"factory": "tests.own_models:data", "kwargs": {"tasks": list(TASKS)}}}
    config = tmp / "own.yaml"
    config.write_text(yaml.safe_dump(cfg))
    small = tmp / "small.safetensors"
    result = runner.invoke(app, ["prune", "--config", str(config), "--tasks", "seg,depth", "--sparsity", "0.5",
                                 "--out", str(small), "--quiet"])
    assert result.exit_code == 0, result.output
    return config, small


def test_own_files_load_with_their_config_or_trust(tmp_path: Path) -> None:
    config, small = _own_setup(tmp_path)
    refused = runner.invoke(app, ["info", str(small)])
    assert refused.exit_code == 2 and "tests.own_models:fpn" in refused.output
    result = runner.invoke(app, ["export", str(small), "--out", str(tmp_path / "m.onnx"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    for command in (["info", str(small)], ["bench", str(small), "--runs", "1", "--size", "32", "32"]):
        assert runner.invoke(app, command).exit_code == 2
        result = runner.invoke(app, [*command, "--trust-code"])
        assert result.exit_code == 0, result.output
    with pytest.raises(UntrustedCode):
        taskcut.load(small)
    assert set(taskcut.load(small, trust=True)(torch.rand(1, 3, 32, 32))) == {"seg", "depth"}
    with taskcut.trusting(["tests.own_models:fpn"]):
        taskcut.load(small)
    with pytest.raises(UntrustedCode):  # trust ends with its block
        taskcut.load(small)


def test_another_config_does_not_trust_this_file(tmp_path: Path) -> None:
    config, small = _own_setup(tmp_path)
    other = yaml.safe_load(config.read_text())
    other["model"]["factory"] = "tests.own_models:sliced"
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(other))
    result = runner.invoke(app, ["evaluate", str(small), "--config", str(other_path)])
    assert result.exit_code == 2 and "tests.own_models:fpn" in result.output


def test_zoo_files_need_no_trust(tmp_path: Path) -> None:
    from .conftest import tiny_model_config
    from taskcut.models import build_model

    path = tmp_path / "zoo.safetensors"
    taskcut.save(build_model(tiny_model_config()), path)
    assert runner.invoke(app, ["info", str(path)]).exit_code == 0
    assert isinstance(taskcut.load(path), torch.nn.Module)


def test_untrusted_is_a_taskcut_error() -> None:
    assert issubclass(UntrustedCode, TaskcutError) and "trust" in sys.modules["taskcut.trust"].HOW_TO_TRUST


def test_recorded_shapes_are_checked_before_allocation(tmp_path: Path) -> None:
    """An own model's spec records what pruning changed; a shape its file does not hold (here 400 GB) is
    refused from the header before the rebuilt model allocates it."""
    config, small = _own_setup(tmp_path)
    from safetensors import safe_open

    with safe_open(str(small), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    spec = json.loads(meta["taskcut"])
    spec["structure"] = {"shapes": {"stem.0.weight": [100_000, 100_000, 10, 1]}, "attributes": {}}
    forged = tmp_path / "forged.safetensors"
    save_file(tensors, str(forged), metadata={"taskcut": json.dumps(spec)})
    with pytest.raises(TaskcutError, match=r"records stem.0.weight as \(100000, 100000, 10, 1\), which the file does "
                                           r"not hold"):
        taskcut.load(forged, trust=True)
