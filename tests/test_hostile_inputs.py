"""The README's table of hostile and broken inputs: each row's behaviour, through the CLI, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from taskcut.cli import app
from taskcut.data.images import read_npy
from taskcut.errors import TaskcutError
from taskcut.models import build_model, save

from .conftest import tiny_model_config

runner = CliRunner()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save(build_model(tiny_model_config()).eval(), tmp_path_factory.mktemp("m") / "base.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "zeros"])
def test_damaged_model_file_is_named_and_nothing_is_written(model_file: Path, synth_dir: Path, tmp_path: Path,
                                                            damage: str) -> None:
    data = model_file.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\0" * 256)
    out = tmp_path / "out.safetensors"
    for args in (["prune", str(bad), "--tasks", "seg", "--sparsity", "0.5", "--data", f"synth:{synth_dir}",
                  "--batches", "1", "--batch-size", "2", "--out", str(out), "--quiet"],
                 ["finetune", str(bad), "--data", f"synth:{synth_dir}", "--steps", "1", "--out", str(out), "--quiet"],
                 ["evaluate", str(bad), "--data", f"synth:{synth_dir}", "--out", str(out)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args[0], result.output)
        assert "bad.safetensors" in result.output and "not a readable .safetensors" in result.output
        assert not out.exists()


def test_npy_holding_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "depth.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TaskcutError, match="depth.npy: refused"):
        read_npy(path)


def test_corrupted_or_foreign_resume_checkpoint(model_file: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned.safetensors"
    ckpt = out.with_name(out.name + ".ckpt")
    args = ["finetune", str(model_file), "--data", f"synth:{synth_dir}", "--steps", "4", "--batch-size", "4",
            "--checkpoint-every", "2", "--out", str(out), "--quiet", "--resume"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "no checkpoint" in result.output
    ckpt.write_bytes(b"PK\x03\x04 torn")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "cannot be read" in result.output and not out.exists()
    torch.save({"format": "taskcut-train-checkpoint", "settings": {"label": "other"}}, ckpt)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "other settings" in result.output and not out.exists()


@pytest.mark.parametrize("escape", ["absolute", "dotdot", "link"])
def test_manifest_paths_outside_the_folder_are_refused(synth_dir: Path, tmp_path: Path, escape: str) -> None:
    """A shard path that is absolute, climbs out with `..` or links outside is never opened."""
    import json
    import shutil

    from taskcut.data.dataset import SynthDataset

    other = tmp_path / "other"
    shutil.copytree(synth_dir, other)
    root = tmp_path / "set"
    shutil.copytree(synth_dir, root)
    manifest = json.loads((root / "manifest.json").read_text())
    shard = manifest["splits"]["test"]["shards"][0]
    if escape == "absolute":
        shard["file"] = str(other / shard["file"])
    elif escape == "dotdot":
        shard["file"] = f"../other/{shard['file']}"
    else:
        (root / shard["file"]).unlink()
        (root / shard["file"]).symlink_to(other / shard["file"])
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TaskcutError, match="refused"):
        SynthDataset(root, "test")
    result = runner.invoke(app, ["data", "show", str(root), "--split", "test", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 2 and "refused" in result.output and not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.png"])
def test_index_paths_outside_the_folder_are_refused(tmp_path: Path, bad: str) -> None:
    import json

    from taskcut.data.dataset import open_dataset

    from .layouts import write_nyuv2

    root = write_nyuv2(tmp_path / "nyu", {"train": 2, "test": 1})
    index = json.loads((root / "nyu_v2_3task.json").read_text())
    index["test"][0][0] = bad
    (root / "nyu_v2_3task.json").write_text(json.dumps(index))
    with pytest.raises(TaskcutError, match="refused"):
        open_dataset(f"nyuv2:{root}", "test")


def _bounded(args: list[str], tmp_path: Path, limit_gb: float = 3.0):
    """The CLI in a subprocess whose address space is capped, so an unbounded allocation fails the test."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        limit = int(limit_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", "taskcut.cli", *args], capture_output=True, text=True,
                          preexec_fn=cap, timeout=120, cwd=tmp_path)


def _one_line(done, match: str) -> None:
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and match in lines[0], (done.returncode, done.stderr[-2000:])


def test_a_spec_cannot_allocate_more_than_its_file_holds(model_file: Path, tmp_path: Path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        spec = json.loads(f.metadata()["taskcut"])
    spec["shapes"] = {"trunk.conv1.weight": [16000, 16000, 3, 3]}  # 9 GB of float32, in a 1 MB file
    crafted = tmp_path / "crafted.safetensors"
    save_file(tensors, str(crafted), metadata={"taskcut": json.dumps(spec)})
    _one_line(_bounded(["info", str(crafted)], tmp_path), "the spec wants (16000, 16000, 7, 7)")


def test_a_yaml_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("preset: *a11")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    _one_line(_bounded(["train", "--config", "bomb.yaml", "--out", "x.safetensors"], tmp_path), "refused")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("args,match", [
    (["data", "synth", "--out", "big", "--size", "20000", "20000", "--train", "1", "--val", "1", "--test", "1"],
     "maximum side"),
])
def test_sizes_are_bounded_before_allocation(tmp_path: Path, args: list[str], match: str) -> None:
    _one_line(_bounded(args, tmp_path), match)
    assert not (tmp_path / "big").exists()


def test_a_huge_head_is_refused_before_building(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_text("preset: synth-tiny\nmodel: {head_hidden: 400000, depth: 34, width: 4}\n")
    _one_line(_bounded(["train", "--config", "huge.yaml", "--out", "x.safetensors"], tmp_path),
              "more than the 2,000,000,000 taskcut builds")


@pytest.mark.parametrize("text,match", [
    ("preset: synth-tiny\ntrain: {steps: true}\n", "expected a number, got true"),
    ("preset: synth-tiny\ntrain: {seed: 1e23}\n", "train.seed"),
    ("preset: synth-tiny\nmodel: {head_hidden: []}\n", "model.head_hidden"),
])
def test_typed_config_values_are_strict(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "x.safetensors")])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and match in lines[0], result.output
