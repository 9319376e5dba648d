"""Edge deployment figures, side by side in one run, on full-size SceneNet-ResNet-34 (five tasks, 224x224).

Rows: the dense five-task model; the two-task model (seg, depth) dense; CUT unstructured at
70% (sparse file); CUT structured at 70% (channels removed) on ONNX Runtime; then the structured
model on every edge runtime installed (ONNX Runtime, ExecuTorch/XNNPACK, LiteRT, OpenVINO), fp32
and int8. Every latency is batch 1, `--threads` threads, median of `--runs` warm runs, and every
figure is also a ratio to the dense five-task model on ONNX Runtime fp32, measured in the same
run. Weights are random (cost does not depend on them); CUT scores and int8 calibration come
from synth scenes rendered at the benchmark's size. Also printed: how many convolutions ONNX
Runtime runs quantised in the int8 file, and the structured model's latency ratio over its MAC
ratio against the dense two-task model (wide layers cut to the channel step ONNX Runtime runs,
measured here).

Run: python benchmarks/bench_edge.py [--threads 2] [--runs 5] [--size 224] [--runtimes onnxruntime,executorch,...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from taskcut.compact.masking import apply_masks
from taskcut.compact.structured import structured_prune
from taskcut.config import load_config
from taskcut.cut.fuse import fuse
from taskcut.cut.score import score
from taskcut.cut.select import select
from taskcut.data.synth import render
from taskcut.deploy.bench import count_macs, latencies, measure
from taskcut.deploy.export import TupleOutputs, baked
from taskcut.deploy.formats import format_of_runtime
from taskcut.deploy.formats import onnx as onnx_format
from taskcut.deploy.widths import channel_step
from taskcut.errors import TaskcutError
from taskcut.models import build_model, save

TASKS = ["seg", "depth"]
FULL = {"depth": 34, "width": 1.0, "head_hidden": 1024, "head_dilations": [6, 12, 18, 24], "dropout": 0.5}
EDGE = ("onnxruntime", "executorch", "litert", "openvino")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--runtimes", default=",".join(EDGE))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    torch.manual_seed(0)
    config = load_config("synth-tiny").model.model_copy(update=FULL)
    dense5 = build_model(config).eval()
    batches = []
    for b in range(2):
        items = [render(0, "train", 2 * b + i, *size) for i in range(2)]
        batches.append({k: torch.from_numpy(np.stack([it[k] for it in items])).contiguous() for k in items[0]})
    calibration = torch.cat([b["image"] for b in batches])
    structured_label = f"CUT structured {args.sparsity:.0%}"

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {"dense, five tasks": save(dense5, tmp / "dense5.safetensors")}
        dense2 = select(dense5, TASKS).model
        files["dense, seg+depth"] = save(dense2, tmp / "dense2.safetensors")
        scores = score(dense2, dense2.config.task_specs(), batches)
        unstructured = select(dense5, TASKS).model
        apply_masks(unstructured, fuse(scores, args.sparsity, "vote").masks)
        files[f"CUT unstructured {args.sparsity:.0%}"] = save(unstructured, tmp / "unstructured.safetensors")
        structured = select(dense5, TASKS).model
        step = channel_step("onnxruntime", args.threads)  # wide layers kept at the step ONNX Runtime runs
        structured_prune(structured, batches[0]["image"][:1], scores, args.sparsity, "vote", step)
        macs = {"dense": count_macs(baked(select(dense5, TASKS).model), batches[0]["image"][:1]),
                "structured": count_macs(baked(structured), batches[0]["image"][:1])}
        files[structured_label] = save(structured, tmp / "structured.safetensors")
        del unstructured, dense2, dense5

        rows = {}
        for label, path in files.items():
            print(f"measuring {label} (onnxruntime fp32) ...", flush=True)
            rows[label] = measure(path, "onnxruntime", args.threads, size, warmup=2, runs=args.runs)
        small = baked(structured)
        image = torch.rand(1, 3, *size)
        for runtime in args.runtimes.split(","):
            for int8 in (False, True):
                label = f"{structured_label}, {runtime} {'int8' if int8 else 'fp32'}"
                print(f"measuring {label} ...", flush=True)
                try:
                    format_of_runtime(runtime).module()
                except TaskcutError as exc:
                    print(f"  skipped: {exc}")
                    continue
                times, size_bytes = latencies(small, image, runtime, args.threads, 2, args.runs, TASKS,
                                              calibration if int8 else None)
                rows[label] = {"parameters": rows[structured_label]["parameters"], "file_bytes": size_bytes,
                               "latency_ms_median": statistics.median(times) * 1e3}
        convs = {}
        for int8 in (False, True):
            path = tmp / f"structured{'-int8' if int8 else ''}.onnx"
            onnx_format.write(TupleOutputs(small, TASKS).eval(), image, calibration if int8 else None, path, TASKS)
            convs["int8" if int8 else "fp32"] = onnx_format.convolutions(path)

    base = rows["dense, five tasks"]
    print(f"\nSceneNet-ResNet-34, {size[0]}x{size[1]}, batch 1, CPU, {args.threads} threads, median of {args.runs} "
          "warm runs; x = ratio to the dense five-task model on ONNX Runtime fp32")
    print(f"{'model':<46}{'params (M)':>11}{'x':>7}{'file (MB)':>11}{'x':>7}{'latency (ms)':>14}{'x':>7}")
    for label, r in rows.items():
        params = r.get("nonzero_parameters", r["parameters"]) if "unstructured" in label else r["parameters"]
        print(f"{label:<46}{params / 1e6:>11.2f}{params / base['parameters']:>7.3f}{r['file_bytes'] / 1e6:>11.1f}"
              f"{r['file_bytes'] / base['file_bytes']:>7.3f}{r['latency_ms_median']:>14.1f}"
              f"{r['latency_ms_median'] / base['latency_ms_median']:>7.3f}")
    s = rows[structured_label]
    u = rows[f"CUT unstructured {args.sparsity:.0%}"]
    print(f"targets: structured params <= 0.16x ({s['parameters'] / base['parameters']:.3f}x), structured latency "
          f"<= 0.25x ({s['latency_ms_median'] / base['latency_ms_median']:.3f}x), unstructured file <= 0.20x "
          f"({u['file_bytes'] / base['file_bytes']:.3f}x)")
    int8_rows = {k: v for k, v in rows.items() if k.endswith(" int8")}
    if int8_rows:
        best = min(int8_rows, key=lambda k: int8_rows[k]["latency_ms_median"])
        print(f"target: best int8 runtime <= 0.07x: {best} "
              f"{int8_rows[best]['latency_ms_median'] / base['latency_ms_median']:.3f}x")
    ort8, ort32 = rows.get(f"{structured_label}, onnxruntime int8"), rows.get(f"{structured_label}, onnxruntime fp32")
    if ort8 and ort32:
        print(f"target: ONNX Runtime int8 <= 0.7x its fp32: {ort8['latency_ms_median'] / ort32['latency_ms_median']:.3f}x")
    d2 = rows["dense, seg+depth"]
    mac_ratio, lat_ratio = macs["structured"] / macs["dense"], s["latency_ms_median"] / d2["latency_ms_median"]
    print(f"target: structured latency follows MACs (channel step {step}): against the dense seg+depth model on "
          f"ONNX Runtime fp32, MACs {mac_ratio:.3f}x, latency {lat_ratio:.3f}x: {lat_ratio / mac_ratio:.2f} (<= 1.25)")
    print(f"ONNX Runtime convolutions after graph optimisation: fp32 {convs['fp32']}, int8 {convs['int8']}")


if __name__ == "__main__":
    main()
