"""The reliability defects of fleet files, own-model YAML, scores files and bench (issue 23): each bad
input is one line, exit 2, with nothing written or lost; resumed runs never reuse stale rows."""

from __future__ import annotations

import csv
import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from taskcut.cli import app

from .test_fleet import _fleet, base  # noqa: F401  (the module's base-model fixture)

runner = CliRunner()
ONE = [{"name": "cam", "tasks": ["seg"], "budget": "params=0.3"}]


def _one_line(result, code: int = 2) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == code and len(lines) == 1, result.output
    return lines[0]


def _edit(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


# 1. an own-model YAML goes through the alias guard --------------------------------------------------

def test_own_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    lines.append("model: {factory: 'tests.own_models:fpn', kwargs: {x: *i}}")
    bomb = tmp_path / "own.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    result = runner.invoke(app, ["prune", "--config", str(bomb), "--tasks", "seg", "--sparsity", "0.5",
                                 "--out", str(tmp_path / "o.safetensors")])
    assert "aliases" in _one_line(result) and time.perf_counter() - start < 10
    assert not (tmp_path / "o.safetensors").exists()


# 2. a resumed fleet recomputes a device whose settings changed -----------------------------------------

def test_resumed_fleet_recomputes_a_changed_device(base: Path, synth_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    path = _fleet(tmp_path, base, synth_dir, ONE)
    out = tmp_path / "run"
    assert runner.invoke(app, ["fleet", str(path), "--out", str(out), "--quiet"]).exit_code == 0
    first = next(csv.DictReader((out / "fleet.csv").open()))
    assert float(first["budget_ratio"]) > 0.9
    _edit(path, lambda d: d["devices"][0].update(budget="params=0.6"))
    result = runner.invoke(app, ["fleet", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0 and "changed since its row was written" in result.output, result.output
    second = next(csv.DictReader((out / "fleet.csv").open()))
    assert second["budget"] == "params=0.6" and second["key"] != first["key"]
    assert int(second["params_nonzero"]) > int(first["params_nonzero"])  # recomputed, not the stale row
    _edit(path, lambda d: d["bench"].update(runs=3))  # the bench is part of what made the row
    result = runner.invoke(app, ["fleet", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0 and "changed since" in result.output
    result = runner.invoke(app, ["fleet", str(path), "--out", str(out), "--quiet"])  # unchanged: reused
    assert result.exit_code == 0 and "changed since" not in result.output and "fleet 1/1" not in result.output
    reused = next(csv.DictReader((out / "fleet.csv").open()))  # read back and written again
    assert reused["params_nonzero"] == str(int(second["params_nonzero"]))  # 11. integers stay integers


# 3. two writers of one fleet folder ----------------------------------------------------------------------

def test_a_second_fleet_into_the_same_folder_fails_at_once(base: Path, synth_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    path = _fleet(tmp_path, base, synth_dir, ONE)
    out = tmp_path / "run"
    lock = tmp_path / ".run.lock"
    with open(lock, "a+") as held:  # what a running fleet holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(app, ["fleet", str(path), "--out", str(out), "--quiet"])
    line = _one_line(result)
    assert "another taskcut run is running a fleet into" in line and str(out) in line
    assert not (out / "fleet.csv").exists()


# 4. numbers bounded before use ------------------------------------------------------------------------

@pytest.mark.parametrize("bench, words", [({"size": [100000, 100000]}, "less than or equal to 4096"),
                                          ({"threads": 100000}, "less than or equal to 256"),
                                          ({"size": [0, 0]}, "greater than or equal to 1"),
                                          ({"threads": True}, "expected a number"),
                                          ({"runs": True}, "expected a number")])
def test_fleet_numbers_are_bounded_and_strict(base: Path, synth_dir: Path, tmp_path: Path, bench: dict,  # noqa: F811
                                              words: str) -> None:
    path = _edit(_fleet(tmp_path, base, synth_dir, ONE), lambda d: d["bench"].update(bench))
    out = tmp_path / "run"
    assert words in _one_line(runner.invoke(app, ["fleet", str(path), "--out", str(out)]))
    assert not (out / "scores.safetensors").exists() and not (out / "settings.json").exists()


def test_bench_threads_and_export_record_sizes_are_bounded(base: Path, tmp_path: Path) -> None:  # noqa: F811
    assert "threads must be between 1 and 256" in _one_line(
        runner.invoke(app, ["bench", str(base), "--threads", "100000", "--size", "32", "32"]))
    exported = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(base), "--out", str(exported), "--size", "32", "32"]).exit_code == 0
    record = Path(f"{exported}.taskcut.json")
    data = json.loads(record.read_text())
    data["input"] = [3, 100000, 100000]
    record.write_text(json.dumps(data))
    assert "input size" in _one_line(runner.invoke(app, ["bench", str(exported)]))
    data["input"] = [100000, 32, 32]
    record.write_text(json.dumps(data))
    assert "channels (1 to 64)" in _one_line(runner.invoke(app, ["bench", str(exported)]))


# 5. a scores file must hold every tensor it lists ------------------------------------------------------

def test_a_scores_file_with_tensors_removed_is_refused(base: Path, synth_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    scores = tmp_path / "scores.safetensors"
    result = runner.invoke(app, ["score", str(base), "--data", f"synth:{synth_dir}", "--batches", "2",
                                 "--batch-size", "4", "--out", str(scores), "--quiet"])
    assert result.exit_code == 0, result.output
    with safe_open(str(scores), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    seg = sorted(k for k in tensors if k.startswith("seg|"))
    for key in seg[:5]:
        del tensors[key]
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata=meta)
    out = tmp_path / "small.safetensors"
    line = _one_line(runner.invoke(app, ["prune", str(base), "--tasks", "seg", "--sparsity", "0.5", "--scores",
                                         str(damaged), "--data", f"synth:{synth_dir}", "--out", str(out)]))
    assert "lacks 5 of the score tensors" in line and not out.exists()
    # the intact file works, with the scoring settings taken from it (not repeated on the command line)
    result = runner.invoke(app, ["prune", str(base), "--tasks", "seg", "--sparsity", "0.5", "--scores", str(scores),
                                 "--data", f"synth:{synth_dir}", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    line = _one_line(runner.invoke(app, ["prune", str(base), "--tasks", "seg", "--sparsity", "0.5", "--scores",
                                         str(scores), "--batches", "3", "--data", f"synth:{synth_dir}",
                                         "--out", str(tmp_path / "other.safetensors")]))
    assert "--batches 3" in line and "scored with 2" in line


# 8. the fleet file is checked whole before any scoring -----------------------------------------------

@pytest.mark.parametrize("device, words", [
    ({"name": "..", "tasks": ["seg"], "budget": "params=0.3"}, "no device name"),
    ({"name": ".", "tasks": ["seg"], "budget": "params=0.3"}, "no device name"),
    ({"name": "a/b", "tasks": ["seg"], "budget": "params=0.3"}, "pattern"),
    ({"name": "cam", "tasks": ["seg", "seg"], "budget": "params=0.3"}, "seg named twice"),
    ({"name": "cam", "tasks": ["seg"], "budget": "params=0.3", "structured": "yes"}, "expected true or false"),
    ({"name": "cam", "tasks": ["seg"], "budget": "params=0.3", "int8": 1}, "expected true or false"),
])
def test_the_fleet_file_is_strict(base: Path, synth_dir: Path, tmp_path: Path, device: dict,  # noqa: F811
                                  words: str) -> None:
    path = _fleet(tmp_path, base, synth_dir, [device])
    out = tmp_path / "run"
    assert words in _one_line(runner.invoke(app, ["fleet", str(path), "--out", str(out)]))
    assert not (out / "scores.safetensors").exists() and not (out / "settings.json").exists()
    assert not (tmp_path / "seg").exists() and not any(tmp_path.glob("*.safetensors"))


@pytest.mark.parametrize("key, value", [("steps", True), ("batch_size", True), ("lr", True)])
def test_finetune_numbers_are_no_booleans(base: Path, synth_dir: Path, tmp_path: Path, key: str,  # noqa: F811
                                          value: object) -> None:
    path = _edit(_fleet(tmp_path, base, synth_dir, ONE), lambda d: d["finetune"].update({key: value}))
    assert "expected a number" in _one_line(runner.invoke(app, ["fleet", str(path), "--out", str(tmp_path / "r")]))


# 10. no lock file survives a signal ------------------------------------------------------------------

def test_sigterm_during_data_synth_leaves_no_lock(tmp_path: Path) -> None:
    out = tmp_path / "set"
    proc = subprocess.Popen([sys.executable, "-m", "taskcut.cli", "data", "synth", "--out", str(out),
                             "--train", "4000", "--val", "4", "--test", "4", "--size", "64", "64", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".set.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert lock.exists(), "the writer never took its lock"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_normal_run_leaves_no_lock_either(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "set"), "--train", "2", "--val", "1",
                                 "--test", "1", "--size", "32", "32", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


# 11. the stop message names only what the command has -------------------------------------------------

def test_the_stop_message_names_the_resume_the_command_has(base: Path, synth_dir: Path, tmp_path: Path,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import taskcut.jobs.scoring as scores_module

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(scores_module, "score", interrupted)
    result = runner.invoke(app, ["score", str(base), "--data", f"synth:{synth_dir}", "--out",
                                 str(tmp_path / "s.safetensors")])
    assert result.exit_code == 130 and "--resume" not in result.output and "stopped" in result.output
    import taskcut.jobs.tuning as finetune_module

    monkeypatch.setattr(finetune_module, "finetune", interrupted)
    result = runner.invoke(app, ["finetune", str(base), "--data", f"synth:{synth_dir}", "--out",
                                 str(tmp_path / "t.safetensors")])
    assert result.exit_code == 130 and "--resume" in result.output



@pytest.mark.parametrize("args", [["finetune", "{base}", "--batch-size", "10000000"],
                                  ["score", "{base}", "--batch-size", "10000000"],
                                  ["prune", "{base}", "--tasks", "seg", "--sparsity", "0.5", "--batch-size", "10000000"],
                                  ["compare", "{base}", "--tasks", "seg", "--batch-size", "10000000"]])
def test_batch_sizes_are_bounded_before_use(base: Path, synth_dir: Path, tmp_path: Path, args: list) -> None:  # noqa: F811
    out = tmp_path / "out"
    extra = ["--data", f"synth:{synth_dir}", "--out", str(out)]
    line = _one_line(runner.invoke(app, [a.format(base=base) for a in args] + extra))
    assert "4096" in line and not out.exists()
