"""Signals, full disks, concurrent writers, missing extras and unexpected errors: one line, no orphans."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
from typer.testing import CliRunner

from taskcut.cli import app
from taskcut.fileio import atomic_path
from taskcut.models import build_model, save

from .conftest import tiny_model_config

runner = CliRunner()


def _leftovers(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.") and not p.name.endswith(".lock")]


def _start_synth(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taskcut.cli", "data", "synth", "--out", str(out), "--train",
                             "4000", "--val", "1", "--test", "1", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_staging(folder: Path, name: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not _leftovers(folder, name):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer never started"
        time.sleep(0.1)


def test_sigterm_while_writing_leaves_no_orphan(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    proc = _start_synth(out)
    _wait_for_staging(tmp_path, "scenes", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGTERM" in lines[0]
    assert not out.exists() and not _leftovers(tmp_path, "scenes")


def test_two_writers_of_one_folder_one_fails_clearly(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    proc = _start_synth(out)
    try:
        _wait_for_staging(tmp_path, "scenes", proc)
        result = runner.invoke(app, ["data", "synth", "--out", str(out), "--train", "2", "--val", "1", "--test", "1",
                                     "--force", "--quiet"])
        assert result.exit_code == 2 and "another taskcut run is writing" in result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    dead = tmp_path / ".model.safetensors.999999999.abc.tmp"  # a pid no process has
    dead.write_bytes(b"x" * 1000)
    mine = tmp_path / f".model.safetensors.{os.getppid()}.def.tmp"  # a live process's work in progress
    mine.write_bytes(b"y")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and not dead.exists() and mine.exists()


@contextlib.contextmanager
def _full_disk(where: Path, size: str = "96k") -> Iterator[Path]:
    """A real small file system (tmpfs; the tests run as root, as CI does): writes past `size` fail with
    ENOSPC exactly as on a full disk, in whichever library is writing."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()})"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.mark.parametrize("command", ["prune", "score", "fleet"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, synth_dir: Path, command: str) -> None:
    torch.manual_seed(0)
    base = save(build_model(tiny_model_config()).eval(), tmp_path / "base.safetensors")
    with _full_disk(tmp_path / "disk") as disk:
        (disk / "ballast").write_bytes(b"x" * 60_000)  # what else the disk holds
        out = disk / "out.safetensors"
        data = f"synth:{synth_dir}"
        if command == "prune":
            args = ["prune", str(base), "--tasks", "seg", "--sparsity", "0.5", "--data", data, "--batches", "1",
                    "--batch-size", "4", "--out", str(out), "--quiet"]
        elif command == "score":
            args = ["score", str(base), "--data", data, "--batches", "1", "--batch-size", "4", "--out", str(out),
                    "--quiet"]
        else:
            fleet = tmp_path / "fleet.yaml"
            fleet.write_text(json.dumps({"base": str(base), "data": data, "scoring": {"batches": 1, "batch_size": 4},
                                         "devices": [{"name": "cam", "tasks": ["seg"], "budget": "params=0.5"}]}))
            out = disk / "run"
            args = ["fleet", str(fleet), "--out", str(out), "--quiet"]
        result = runner.invoke(app, args)
        lines = [line for line in result.output.strip().splitlines() if line.startswith("error")]
        assert result.exit_code == 2 and len(lines) == 1 and "the disk is full" in lines[0], result.output
        assert str(disk) in lines[0]  # names where it was writing
        left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file())
        assert left in (["ballast"], ["ballast", "run/settings.json"]), left  # no half-written file, no lock
        assert (disk / "ballast").stat().st_size == 60_000


def test_a_missing_extra_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = save(build_model(tiny_model_config()).eval(), tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # a broken install: taskcut depends on it
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(model), "--out", str(out)])
    assert result.exit_code == 2 and "pip install onnxruntime" in result.output, result.output
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "openvino", None)  # an extra that is not installed
    result = runner.invoke(app, ["export", str(model), "--format", "openvino", "--out", str(tmp_path / "m.xml")])
    assert result.exit_code == 2 and "pip install 'taskcut[openvino]'" in result.output, result.output
    assert not (tmp_path / "m.xml").exists()


def test_an_unexpected_error_is_one_line_with_the_debug_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import taskcut.models.io as io

    torch.manual_seed(0)
    model = save(build_model(tiny_model_config()).eval(), tmp_path / "m.safetensors")

    def boom(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nwith a second line")

    monkeypatch.setattr(io, "build_model", boom)
    result = runner.invoke(app, ["info", str(model)])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "unexpected RuntimeError: something nobody foresaw" in lines[0] and "--debug" in lines[0]
    monkeypatch.setenv("TASKCUT_DEBUG", "")  # so the teardown removes what --debug sets
    result = runner.invoke(app, ["--debug", "info", str(model)])
    assert isinstance(result.exception, RuntimeError)  # the traceback is there for whoever asked for it


@pytest.mark.parametrize("content,match", [
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}      ", "a safetensors file"),
    (b'{"state": 1}', "JSON or text"),
])
def test_import_of_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path: Path, content: bytes, match: str) -> None:
    ckpt = tmp_path / "renamed.pth"
    ckpt.write_bytes(content)
    out = tmp_path / "o.safetensors"
    result = runner.invoke(app, ["import", str(ckpt), "--tasks", "seg,normal,depth", "--out", str(out)])
    assert result.exit_code == 2 and match in result.output and "pickled" not in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_devices_other_than_cpu_and_cuda_are_refused(tmp_path: Path, device: str) -> None:
    result = runner.invoke(app, ["prune", str(tmp_path / "m.safetensors"), "--tasks", "seg", "--sparsity", "0.5",
                                 "--data", "synth:x", "--out", str(tmp_path / "o.safetensors"), "--device", device])
    assert result.exit_code == 2 and "cpu or cuda" in result.output


def test_a_sigterm_that_native_code_swallowed_still_stops_the_writer(tmp_path: Path, monkeypatch) -> None:
    """The handler remembers the request: if the exception it raised is lost inside native code (the
    writer then ran on to exit 0 once in a full run), the next image's check raises it again."""
    from taskcut import errors
    from taskcut.data.store import write_synth

    monkeypatch.setattr(errors, "_terminated", True)  # the state right after a swallowed Terminated
    with pytest.raises(errors.Terminated):
        write_synth(tmp_path / "scenes", {"train": 2, "val": 1, "test": 1}, (16, 16))
    assert not (tmp_path / "scenes").exists() and not _leftovers(tmp_path, "scenes")
