"""torchrun (2 processes, Gloo on loopback) against one process; SIGKILL and resume; a non-finite loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskcut import load
from taskcut.cli import app
from taskcut.compact.masking import masks_of, plain_state
from taskcut.errors import TaskcutError
from taskcut.models import build_model, save

from .conftest import tiny_model_config

runner = CliRunner()
#: torchrun through the interpreter running the tests: found whether or not the venv's bin is on PATH.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save(build_model(tiny_model_config()).eval(), tmp_path_factory.mktemp("base") / "base.safetensors")


def _cli(*args: str, nproc: int = 1, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    if nproc == 1:
        cmd = [sys.executable, "-m", "taskcut.cli", *args]
    else:
        cmd = [*TORCHRUN, "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port",
               str(_free_port()), "-m", "taskcut.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _free_port() -> int:
    """A loopback port nobody listens on (torchrun's static rendezvous cannot take port 0)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return plain_state(load(path))


def test_two_process_scoring_gives_the_single_process_masks(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    args = ["prune", str(base), "--tasks", "seg,depth,normal", "--sparsity", "0.7", "--data", f"synth:{synth_dir}",
            "--batches", "4", "--batch-size", "2", "--quiet"]
    one = _cli(*args, "--out", str(tmp_path / "one.safetensors"))
    two = _cli(*args, "--out", str(tmp_path / "two.safetensors"), nproc=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr[-3000:]
    m1, m2 = masks_of(load(tmp_path / "one.safetensors")), masks_of(load(tmp_path / "two.safetensors"))
    assert m1.keys() == m2.keys() and m1
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


@pytest.mark.parametrize("command", ["finetune", "train"])
def test_two_process_training_matches_one_process(base: Path, synth_dir: Path, tmp_path: Path, command: str) -> None:
    if command == "finetune":
        small = tmp_path / "small.safetensors"
        assert runner.invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.5", "--data",
                                   f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(small),
                                   "--quiet"]).exit_code == 0
        args = ["finetune", str(small), "--data", f"synth:{synth_dir}", "--steps", "4", "--batch-size", "4",
                "--lr", "1e-3", "--val-every", "2", "--quiet"]
    else:
        config = tmp_path / "tiny.yaml"
        import yaml

        config.write_text(yaml.safe_dump({"model": tiny_model_config().model_dump(mode="json"),
                                          "data": {"size": [32, 32]},
                                          "train": {"steps": 4, "batch_size": 4, "val_every": 2, "lr": 1e-3}}))
        args = ["train", "--config", str(config), "--data", f"synth:{synth_dir}", "--quiet"]
    one = _cli(*args, "--out", str(tmp_path / "one.safetensors"))
    two = _cli(*args, "--out", str(tmp_path / "two.safetensors"), nproc=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr[-3000:]
    w1, w2 = _weights(tmp_path / "one.safetensors"), _weights(tmp_path / "two.safetensors")
    moved = max(float((w1[k] - w2[k]).abs().max()) for k in w1 if w1[k].is_floating_point())
    assert moved < 1e-4, moved
    start = plain_state(load(small)) if command == "finetune" else None
    if start is not None:  # the runs did train
        assert max(float((w1[k] - start[k]).abs().max()) for k in w1 if w1[k].is_floating_point()) > 1e-3


def test_sigkill_then_resume_gives_the_uninterrupted_weights(base: Path, synth_dir: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.safetensors"
    assert runner.invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.5", "--data",
                               f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(small),
                               "--quiet"]).exit_code == 0
    args = ["finetune", str(small), "--data", f"synth:{synth_dir}", "--steps", "60", "--batch-size", "4",
            "--lr", "1e-3", "--val-every", "5", "--checkpoint-every", "3", "--quiet"]
    whole = _cli(*args, "--out", str(tmp_path / "whole.safetensors"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut.safetensors"
    ckpt = out.with_name(out.name + ".ckpt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "taskcut.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere past a checkpoint, perhaps in the middle of writing the next
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists()
    again = _cli(*args, "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr  # an unfinished run is not silently restarted
    resumed = _cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not ckpt.exists()  # removed once the model is written
    w1, w2 = _weights(tmp_path / "whole.safetensors"), _weights(out)
    assert all(torch.allclose(w1[k].float(), w2[k].float(), atol=1e-6, rtol=0) for k in w1)
    assert masks_of(load(out)).keys() == masks_of(load(small)).keys()


def test_non_finite_loss_stops_naming_task_and_step_and_keeps_the_checkpoint(base: Path, synth_dir: Path,
                                                                              tmp_path: Path, monkeypatch) -> None:
    from taskcut import tasks as tasks_module
    from taskcut.jobs.tuning import finetune
    from taskcut.jobs.settings import FinetuneSettings
    from taskcut.jobs.source import source_of_file

    small = tmp_path / "small.safetensors"
    assert runner.invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.5", "--data",
                               f"synth:{synth_dir}", "--batches", "2", "--batch-size", "4", "--out", str(small),
                               "--quiet"]).exit_code == 0
    original = tasks_module.TaskSpec.loss
    calls = {"n": 0}

    def poisoned(self, pred, target):
        loss = original(self, pred, target)
        if self.name == "depth":
            calls["n"] += 1
            if calls["n"] == 5:  # the fifth training step
                return loss * float("nan")
        return loss

    monkeypatch.setattr(tasks_module.TaskSpec, "loss", poisoned)
    out = tmp_path / "tuned.safetensors"
    with pytest.raises(TaskcutError, match=r"non-finite depth loss at step 5.*step 4") as err:
        finetune(source_of_file(small, data=f"synth:{synth_dir}"), small,
                 FinetuneSettings(steps=10, batch_size=4, val_every=100, checkpoint_every=2), out, show_progress=False)
    assert not out.exists()
    ckpt = out.with_name(out.name + ".ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert "--resume" in str(err.value)
    # a checkpoint as the version before wrote it (per-tensor Adam: no optimiser kind in its settings) is
    # refused on --resume, not continued with fused Adam's rule; the checkpoint stays for that version
    monkeypatch.setattr(tasks_module.TaskSpec, "loss", original)
    del state["settings"]["optimiser"]
    torch.save(state, ckpt)
    with pytest.raises(TaskcutError, match="other settings"):
        finetune(source_of_file(small, data=f"synth:{synth_dir}"), small,
                 FinetuneSettings(steps=10, batch_size=4, val_every=100, checkpoint_every=2, resume=True), out,
                 show_progress=False)
    assert not out.exists() and ckpt.exists()


def test_a_stalled_rank_ends_the_run_with_the_timeout(tmp_path: Path) -> None:
    """Rank 1 stops answering; rank 0's collective gives up after TASKCUT_DIST_TIMEOUT, not never."""
    script = tmp_path / "stall.py"
    script.write_text(
        "import os, sys, time\n"
        "import torch.distributed as dist\n"
        "from taskcut.train.distributed import init\n"
        "init('cpu')\n"
        "if dist.get_rank() == 1:\n"
        "    time.sleep(60)\n"
        "    sys.exit(0)\n"
        "start = time.time()\n"
        "try:\n"
        "    dist.barrier()\n"
        "except Exception as exc:\n"
        "    print(f'rank0 gave up after {time.time() - start:.0f}s: {type(exc).__name__}', flush=True)\n"
        "    os._exit(3)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TASKCUT_DIST_TIMEOUT": "3"}
    cmd = [*TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(script)]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    assert "rank0 gave up after" in done.stdout + done.stderr
    assert time.monotonic() - start < 55  # torchrun ended the job when rank 0 failed
