"""`taskcut demo`: the product in one run, on the embedded synth scenes.

A pre-trained five-task base model (synth-tiny, shipped in the package) is pruned for a small fleet
of three devices, each with its own tasks and budget: every task is scored once, each
device is pruned to its budget, fine-tuned (100 steps, on the labels), evaluated
against the dense model and against the dense control (the dense model given exactly the
same fine-tuning), exported to its runtime and benched. Then CUT is compared with
DiSparse, magnitude and random pruning where they differ most (90% on {seg, depth}).
`report.html` (self-contained) and `report.md` show it all, with the commands that
reproduce every row.

The fleet and the comparison run in the cache, keyed by the base model's hash and the
demo's settings: a second run reuses them and only writes the report again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..cache import cache_dir
from ..config import load_config
from ..errors import TaskcutError
from ..fileio import file_sha256, write_text
from ..train.runs import resolve_data

MARKER = ".taskcut-demo"
#: Fine-tuning of every device and of its control: plain, the fleet's default (distillation from the
#: dense model, `--distill`, gains 0.4-0.7 points at 100 steps on synth-tiny, README "Fine-tuning that
#: learns from the dense model", for a teacher's forward pass every step). 100 steps (the demo
#: ran 300 before): fine-tuning is most of a cold demo; with the comparison's schedule the same, the
#: camera's control ({seg, depth}) is the comparison's, trained once; and the demo stays well under 0.4x
#: the time of the demo before the base model shipped (`benchmarks/bench_demo.py`; 150 steps was 0.42x).
FINETUNE: dict[str, Any] = {"steps": 100, "batch_size": 32, "lr": 5e-4, "val_every": 25}
SCORING = {"batches": 50, "batch_size": 8}
#: Latency at 224 x 224 (at the data's 64 x 64 a call's fixed cost hides the compute), batch 1,
#: the median of 20 warm runs on 2 threads.
BENCH: dict[str, Any] = {"threads": 2, "size": [224, 224], "runs": 20}
#: Where the methods differ most: at 70% they are within a standard deviation of each other.
COMPARE: dict[str, Any] = {"tasks": ["seg", "depth"], "sparsity": 0.9, "seed": 0, "finetune_steps": 100,
                           "methods": ["cut", "disparse", "magnitude", "random"]}
#: Runtimes by int8 latency on this class of CPU (README deployment figures: OpenVINO 0.041x the dense
#: model, ONNX Runtime 0.058x); the first one installed runs the latency-bound device.
FASTEST = ("openvino", "onnxruntime")


def devices(runtime: str) -> list[dict[str, Any]]:
    """Three devices: different tasks (together all five), budgets of three kinds, structured and unstructured."""
    # the doorbell's budget is 0.6 of the dense seg model's int8 latency: at 0.5 its most pruned model (0.9)
    # measured 1.01x the budget in one cold run here (the int8 runtime's fixed cost per call)
    return [
        {"name": "doorbell", "tasks": ["seg"], "budget": "latency=0.6", "structured": True, "runtime": runtime,
         "int8": True},
        {"name": "camera", "tasks": ["seg", "depth"], "budget": "params=0.1", "runtime": "onnxruntime"},
        {"name": "robot", "tasks": ["normal", "keypoint", "edge"], "budget": "transport=0.35", "runtime": "onnxruntime"},
    ]


def base_model(show_progress: bool = True, device: str = "cpu") -> tuple[Path, str]:
    """The shipped, pre-trained synth-tiny base model (`taskcut.models.pretrained`), the synth data it was
    trained on (generated once and cached): nothing is trained here. `taskcut train --preset synth-tiny`
    makes the same model again; its provenance says how."""
    from ..models.pretrained import pretrained_path

    path = pretrained_path("synth-tiny")
    data = resolve_data(load_config("synth-tiny"), None, show_progress)
    return path, data


def fastest_runtime() -> str:
    """The fastest int8 runtime that is installed (ONNX Runtime always is)."""
    from ..deploy.bench import check_runtime

    for runtime in FASTEST:
        try:
            check_runtime(runtime, True)
            return runtime
        except TaskcutError:
            continue
    raise TaskcutError("no edge runtime is installed: pip install onnxruntime")


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TaskcutError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise TaskcutError(f"{out} is not empty and is not a taskcut demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by taskcut demo; its files are replaced by the next demo run\n")


def demo(out: Path, device: str = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Base model -> fleet of three devices -> comparison -> report.html and report.md in `out`."""
    from .compare import CompareSpec, run_compare
    from .fleet import run_fleet

    out = Path(out)
    _prepare(out)
    t0 = time.perf_counter()
    base, data = base_model(show_progress, device)
    t_base = time.perf_counter() - t0
    fleet = {"base": str(base), "data": data, "scoring": SCORING, "finetune": FINETUNE, "bench": BENCH,
             "devices": devices(fastest_runtime())}
    key = hashlib.sha256(json.dumps({"base": file_sha256(base), "fleet": {**fleet, "base": None},
                                     "compare": COMPARE, "taskcut": __version__},
                                    sort_keys=True).encode()).hexdigest()[:16]
    work = cache_dir() / "demo" / key
    work.mkdir(parents=True, exist_ok=True)
    write_text(work / "fleet.yaml", yaml.safe_dump(fleet, sort_keys=False))
    rows = run_fleet(work / "fleet.yaml", work / "fleet", device, show_progress)
    t_fleet = time.perf_counter() - t0 - t_base
    spec = CompareSpec(base=base, tasks=COMPARE["tasks"], sparsities=[COMPARE["sparsity"]],
                       methods=COMPARE["methods"], seeds=[COMPARE["seed"]], data=data, out=work / "compare",
                       finetune_steps=COMPARE["finetune_steps"], batches=SCORING["batches"],
                       batch_size=SCORING["batch_size"], finetune_batch_size=FINETUNE["batch_size"],
                       lr=FINETUNE["lr"])
    comparison = run_compare(spec, device, show_progress)
    t_compare = time.perf_counter() - t0 - t_base - t_fleet

    _publish(work, out, fleet)
    result = {
        "base": str(base), "data": data, "work": str(work), "fleet": fleet,
        "devices": [_device_result(row, work / "fleet" / "devices" / row["device"]) for row in rows],
        "comparison": comparison, "compare": COMPARE,
        "seconds": {"base": t_base, "fleet": t_fleet, "compare": t_compare},
    }
    from ..report.demo import write_reports

    write_reports(out, result, device)
    result["seconds"]["total"] = time.perf_counter() - t0
    write_text(out / "results.json", json.dumps(result, indent=2, default=str))
    return result


def _device_result(row: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A fleet row with the per-task figures of its evaluation and the files it made."""
    from ..deploy.formats import format_of_runtime

    evaluation = json.loads((folder / "evaluation.json").read_text())
    exported = folder / f"model{format_of_runtime(row['runtime']).suffix}"
    return {**row, "metrics": evaluation["metrics"], "per_task_vs_dense": evaluation["baseline"]["per_task"],
            "per_task_vs_control": evaluation.get("control", {}).get("per_task"),
            "dense_metrics": evaluation["baseline"]["metrics"],
            "control_metrics": evaluation.get("control", {}).get("metrics"),
            "exported": str(exported), "tuned": str(folder / "tuned.safetensors")}


def _publish(work: Path, out: Path, fleet: dict[str, Any]) -> None:
    """The devices' models and exported files, and the fleet file, copied into the demo folder."""
    target = out / "devices"
    if target.exists():
        shutil.rmtree(target)
    for device in fleet["devices"]:
        source = work / "fleet" / "devices" / device["name"]
        for path in sorted(source.iterdir()):
            if path.name.startswith(("tuned.", "model.")) or path.name == "evaluation.json":
                (target / device["name"]).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / device["name"] / path.name)
    write_text(out / "fleet.yaml", (work / "fleet.yaml").read_text())
    shutil.copy2(work / "fleet" / "fleet.csv", out / "fleet.csv")
    shutil.copy2(work / "compare" / "results.csv", out / "compare.csv")
