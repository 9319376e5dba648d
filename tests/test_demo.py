"""`taskcut demo` on a tiny base model: the fleet, the comparison, report.html and report.md, and the warm rerun.

The demo's own settings (synth-tiny, 100 fine-tuning steps) take minutes: the slow test runs them.
"""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

import pytest
import torch

from taskcut.workflows import demo as demo_module
from taskcut.report.demo import headline
from taskcut.models import build_model, save

from .conftest import tiny_model_config

DEVICES = [
    {"name": "doorbell", "tasks": ["seg"], "budget": "macs=0.5", "structured": True, "runtime": "openvino",
     "int8": True},
    {"name": "camera", "tasks": ["seg", "depth"], "budget": "params=0.2", "runtime": "onnxruntime"},
    {"name": "vacuum", "tasks": ["normal", "edge"], "budget": "transport=0.5", "runtime": "onnxruntime"},
]


@pytest.fixture
def tiny_demo(tmp_path: Path, synth_dir: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    torch.manual_seed(0)
    model = build_model(tiny_model_config().model_copy(update={"width": 0.25, "head_hidden": 16})).eval()
    with torch.no_grad():  # depths near the scenes' (a random model's zero depth has no relative error)
        for branch in model.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    base = save(model, tmp_path / "base.safetensors")
    monkeypatch.setattr(demo_module, "base_model", lambda show_progress=True, device="cpu":
                        (base, f"synth:{synth_dir}"))
    monkeypatch.setattr(demo_module, "FINETUNE", {"steps": 2, "batch_size": 4, "lr": 5e-4, "val_every": 1,
                                                  "distill": {"weight": 1.0}})
    monkeypatch.setattr(demo_module, "SCORING", {"batches": 2, "batch_size": 4})
    monkeypatch.setattr(demo_module, "BENCH", {"threads": 1, "size": [32, 32], "runs": 2})
    monkeypatch.setattr(demo_module, "COMPARE", {"tasks": ["seg", "depth"], "sparsity": 0.9, "seed": 0,
                                                 "finetune_steps": 1, "methods": ["cut", "magnitude", "random"]})
    monkeypatch.setattr(demo_module, "devices", lambda runtime: DEVICES)
    return tmp_path / "demo"


def test_the_demo_is_a_fleet_in_one_page(tiny_demo: Path) -> None:
    result = demo_module.demo(tiny_demo, show_progress=False)
    rows = {r["device"]: r for r in csv.DictReader((tiny_demo / "fleet.csv").open())}
    assert set(rows) == {d["name"] for d in DEVICES}
    for d in result["devices"]:
        assert d["budget_ratio"] <= 1.0 and d["delta_T_vs_control"] is not None
        folder = tiny_demo / "devices" / d["device"]
        assert (folder / "tuned.safetensors").is_file() and any(folder.glob("model.*"))
    page = (tiny_demo / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    pictured = {"seg", "depth", "normal", "edge"}  # every task some device holds; keypoint none
    assert len(images) == len(pictured) + 1  # one picture per task, and the comparison plot
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    for d in DEVICES:
        assert f"<td>{d['name']}</td>" in page and f"--out {d['name']}/tuned.safetensors" in page
    assert "dense+ft" in page and "taskcut compare $BASE" in page and "OpenVINO int8" in page
    markdown = (tiny_demo / "report.md").read_text()
    assert "| doorbell |" in markdown and "taskcut fleet fleet.yaml" in markdown
    work = Path(result["work"])
    stamp = (work / "fleet" / "devices" / "camera" / "tuned.safetensors").stat().st_mtime_ns
    again = demo_module.demo(tiny_demo, show_progress=False)  # warm: the fleet and comparison are reused
    assert (work / "fleet" / "devices" / "camera" / "tuned.safetensors").stat().st_mtime_ns == stamp
    assert [d["delta_T_vs_dense"] for d in again["devices"]] == [d["delta_T_vs_dense"] for d in result["devices"]]


def test_a_foreign_folder_is_not_touched(tiny_demo: Path) -> None:
    tiny_demo.mkdir()
    (tiny_demo / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not a taskcut demo folder"):
        demo_module.demo(tiny_demo, show_progress=False)
    assert [p.name for p in tiny_demo.iterdir()] == ["notes.txt"]


def _result(vs_dense: float, vs_control: float) -> dict:
    device = {"device": "cam", "tasks": "seg depth", "structured": False, "budget": "params=0.1", "sparsity": 0.9,
              "delta_T_vs_dense": vs_dense, "delta_T_vs_control": vs_control, "latency_vs_dense": 0.5,
              "runtime": "onnxruntime", "int8": False}
    return {"devices": [device], "comparison": [], "compare": {"methods": [], "tasks": [], "sparsity": 0.9}}


def test_a_gain_the_control_explains_is_called_so() -> None:
    assert "is the extra fine-tuning" in headline(_result(+0.8, -0.3))[0]
    assert "is the extra fine-tuning" not in headline(_result(+0.8, +0.2))[0]
    assert "is the extra fine-tuning" not in headline(_result(-0.8, -1.2))[0]
