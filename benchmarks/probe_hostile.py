"""Run the hostile-input table end to end through the `taskcut` command: one line per row.

Each row makes its hostile input in a fresh temporary folder, runs the command in its own
process (address space capped at 3 GB, so an unbounded allocation shows as a crash, not as
a slow machine), and prints the exit code, the first line of stderr and any leftover
temporaries. Expected: exit 2 (143 for SIGTERM), one line, no leftovers.

Run: python benchmarks/probe_hostile.py
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CLI = [sys.executable, "-m", "taskcut.cli"]


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def run(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, preexec_fn=_cap, timeout=300,
                          **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Temporaries and lock files (none may survive a run, whatever ended it)."""
    return sorted(p.name for p in folder.rglob(".*"))


def report(row: str, code: int, stderr: str, folder: Path) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    print(f"{row:<44} exit {code:>3}  lines {len(lines)}  left {leftovers(folder) or 'none'}  | {first[:110]}")


def synth(folder: Path) -> Path:
    subprocess.run([*CLI, "data", "synth", "--out", "set", "--train", "8", "--val", "2", "--test", "2", "--size",
                    "32", "32", "--quiet"], cwd=folder, check=True)
    return folder / "set"


def model(folder: Path) -> Path:
    from taskcut.config import ModelConfig
    from taskcut.models import build_model, save

    tasks = {"seg": {"kind": "segmentation", "channels": 6}, "depth": {"kind": "depth", "channels": 1}}
    cfg = ModelConfig(depth=18, width=0.125, head_hidden=8, head_dilations=[1, 2], dropout=0.0, tasks=tasks)
    torch.manual_seed(0)
    return save(build_model(cfg).eval(), folder / "base.safetensors")


def main() -> None:
    rows = []

    def row(name):
        def deco(fn):
            rows.append((name, fn))
            return fn
        return deco

    @row("manifest shard path absolute")
    def _(d: Path):
        root = synth(d)
        m = json.loads((root / "manifest.json").read_text())
        m["splits"]["test"]["shards"][0]["file"] = "/etc/passwd"
        (root / "manifest.json").write_text(json.dumps(m))
        return run(["data", "show", "set", "--split", "test", "--out", "g.png"], d)

    @row("manifest shard path with ..")
    def _(d: Path):
        root = synth(d)
        m = json.loads((root / "manifest.json").read_text())
        m["splits"]["test"]["shards"][0]["file"] = "../set/test-0000.npz"
        (root / "manifest.json").write_text(json.dumps(m))
        return run(["data", "show", "set", "--split", "test", "--out", "g.png"], d)

    @row("spec asking for a 9 GB tensor (1 MB file)")
    def _(d: Path):
        path = model(d)
        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            spec = json.loads(f.metadata()["taskcut"])
        spec["shapes"] = {"trunk.conv1.weight": [16000, 16000, 3, 3]}
        save_file(tensors, str(d / "crafted.safetensors"), metadata={"taskcut": json.dumps(spec)})
        return run(["info", "crafted.safetensors"], d)

    @row("1 KB YAML alias bomb under preset:")
    def _(d: Path):
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
        (d / "bomb.yaml").write_text("\n".join(lines) + "\npreset: *a11\n")
        return run(["train", "--config", "bomb.yaml", "--out", "x.safetensors"], d)

    @row("head_hidden: 400000")
    def _(d: Path):
        (d / "c.yaml").write_text("preset: synth-tiny\nmodel: {head_hidden: 400000, depth: 34, width: 4}\n")
        return run(["train", "--config", "c.yaml", "--out", "x.safetensors"], d)

    @row("steps: true")
    def _(d: Path):
        (d / "c.yaml").write_text("preset: synth-tiny\ntrain: {steps: true}\n")
        return run(["train", "--config", "c.yaml", "--out", "x.safetensors"], d)

    @row("data synth --size 20000 20000")
    def _(d: Path):
        return run(["data", "synth", "--out", "big", "--size", "20000", "20000"], d)

    @row("import of a renamed JSON file")
    def _(d: Path):
        (d / "x.pth").write_text('{"a": 1}')
        return run(["import", "x.pth", "--tasks", "seg,normal,depth", "--out", "o.safetensors"], d)

    @row("compare --seeds 0,0")
    def _(d: Path):
        model(d)
        synth(d)
        return run(["compare", "base.safetensors", "--tasks", "seg", "--data", "synth:set", "--seeds", "0,0",
                    "--out", "cmp"], d)

    @row("compare --batch-size 0")
    def _(d: Path):
        model(d)
        synth(d)
        return run(["compare", "base.safetensors", "--tasks", "seg", "--data", "synth:set", "--batch-size", "0",
                    "--out", "cmp"], d)

    @row("--device mps")
    def _(d: Path):
        model(d)
        return run(["evaluate", "base.safetensors", "--data", "synth:set", "--device", "mps"], d)

    @row("SIGTERM while writing a data set")
    def _(d: Path):
        proc = subprocess.Popen([*CLI, "data", "synth", "--out", "set", "--train", "4000", "--quiet"], cwd=d,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_cap)
        deadline = time.monotonic() + 60
        while not leftovers(d) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)

    @row("two writers of one data folder")
    def _(d: Path):
        proc = subprocess.Popen([*CLI, "data", "synth", "--out", "set", "--train", "4000", "--quiet"], cwd=d,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not leftovers(d) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run(["data", "synth", "--out", "set", "--train", "2", "--force", "--quiet"], d)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        return second

    @row("model file whose factory is subprocess:run")
    def _(d: Path):
        spec = {"format": "taskcut.model", "version": 1, "model": {"factory": "subprocess:run",
                                                                   "kwargs": {"args": ["touch", "MARKER"]}},
                "tasks": {}, "masked": {}, "provenance": {}}
        save_file({"w": torch.zeros(1)}, str(d / "crafted.safetensors"), metadata={"taskcut": json.dumps(spec)})
        done = run(["info", "crafted.safetensors"], d)
        marker = "MARKER CREATED: the code ran" if (d / "MARKER").exists() else ""
        return subprocess.CompletedProcess(done.args, done.returncode, "", (marker + "\n" + done.stderr).strip())

    @row("own-model YAML alias bomb (prune --config)")
    def _(d: Path):
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
        (d / "own.yaml").write_text("\n".join(lines) + "\nmodel: {factory: 'x:y', kwargs: {a: *a11}}\n")
        return run(["prune", "--config", "own.yaml", "--tasks", "seg", "--sparsity", "0.5", "--out", "o.safetensors"],
                   d)

    def fleet(d: Path, devices: list[dict], **sections) -> None:
        model(d)
        synth(d)
        (d / "fleet.yaml").write_text(json.dumps({"base": "base.safetensors", "data": "synth:set",
                                                  "scoring": {"batches": 1, "batch_size": 4}, **sections,
                                                  "devices": devices}))

    cam = {"name": "cam", "tasks": ["seg"], "budget": "params=0.5"}

    @row("fleet bench size [100000, 100000]")
    def _(d: Path):
        fleet(d, [cam], bench={"size": [100000, 100000]})
        return run(["fleet", "fleet.yaml", "--out", "run"], d)

    @row("fleet bench threads: 100000")
    def _(d: Path):
        fleet(d, [cam], bench={"threads": 100000})
        return run(["fleet", "fleet.yaml", "--out", "run"], d)

    @row("fleet finetune steps: true")
    def _(d: Path):
        fleet(d, [cam], finetune={"steps": True})
        return run(["fleet", "fleet.yaml", "--out", "run"], d)

    @row("fleet structured: 'yes'")
    def _(d: Path):
        fleet(d, [{**cam, "structured": "yes"}])
        return run(["fleet", "fleet.yaml", "--out", "run"], d)

    @row("fleet device named ..")
    def _(d: Path):
        fleet(d, [{**cam, "name": ".."}])
        return run(["fleet", "fleet.yaml", "--out", "run"], d)

    @row("fleet device with a task twice")
    def _(d: Path):
        fleet(d, [{**cam, "tasks": ["seg", "seg"]}])
        return run(["fleet", "fleet.yaml", "--out", "run"], d)

    @row("a second fleet into a locked --out")
    def _(d: Path):
        import fcntl

        fleet(d, [cam])
        with open(d / ".run.lock", "a+") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            done = run(["fleet", "fleet.yaml", "--out", "run"], d)
        (d / ".run.lock").unlink()
        return done

    @row("bench --threads 100000")
    def _(d: Path):
        model(d)
        return run(["bench", "base.safetensors", "--threads", "100000", "--size", "32", "32"], d)

    @row("export record with 100000-pixel inputs")
    def _(d: Path):
        model(d)
        run(["export", "base.safetensors", "--out", "m.onnx", "--size", "32", "32"], d)
        record = json.loads((d / "m.onnx.taskcut.json").read_text())
        record["input"] = [3, 100000, 100000]
        (d / "m.onnx.taskcut.json").write_text(json.dumps(record))
        return run(["bench", "m.onnx"], d)

    @row("scores file with five tensors removed")
    def _(d: Path):
        model(d)
        synth(d)
        run(["score", "base.safetensors", "--data", "synth:set", "--batches", "1", "--batch-size", "4", "--out",
             "s.safetensors", "--quiet"], d)
        with safe_open(str(d / "s.safetensors"), "pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        for key in sorted(tensors)[:5]:
            del tensors[key]
        save_file(tensors, str(d / "s.safetensors"), metadata=meta)
        return run(["prune", "base.safetensors", "--tasks", "seg", "--sparsity", "0.5", "--scores", "s.safetensors",
                    "--data", "synth:set", "--out", "o.safetensors"], d)

    @row("full disk (a 96 kB tmpfs) under prune")
    def _(d: Path):
        model(d)
        synth(d)
        (d / "disk").mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(d / "disk")]).returncode != 0:
            return subprocess.CompletedProcess([], -1, "", "could not mount a tmpfs (needs root)")
        try:
            return run(["prune", "base.safetensors", "--tasks", "seg", "--sparsity", "0.5", "--data", "synth:set",
                        "--batches", "1", "--batch-size", "4", "--out", "disk/o.safetensors", "--quiet"], d)
        finally:
            subprocess.run(["umount", "-l", str(d / "disk")])

    for name, fn in rows:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            done = fn(folder)
            report(name, done.returncode, done.stderr, folder)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
