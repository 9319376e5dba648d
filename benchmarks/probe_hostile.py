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
    return sorted(p.name for p in folder.rglob(".*") if not p.name.endswith(".lock"))


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

    print("full disk: injected at the file layer in tests/test_robustness.py (no tmpfs mount here)")
    for name, fn in rows:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            done = fn(folder)
            report(name, done.returncode, done.stderr, folder)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
