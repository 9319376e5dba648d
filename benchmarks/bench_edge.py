"""Edge deployment figures, side by side in one run, on full-size SceneNet-ResNet-34 (five tasks, 224x224).

Rows: the dense five-task model; the two-task model (seg, depth) dense; CUT unstructured at
70% (sparse file); CUT structured at 70% (channels removed); the structured model in int8
(onnxruntime static QDQ). Columns: parameters, file size and ONNX Runtime CPU latency
(batch 1), each also as a ratio to the dense five-task model. Weights are random (cost does
not depend on them); CUT scores come from synth scenes rendered at 224x224.

Run: python benchmarks/bench_edge.py [--threads 2] [--runs 5] [--size 224]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from taskcut.deploy.bench import measure, measure_onnx_file
from taskcut.compact.masking import apply_masks
from taskcut.compact.structured import structured_prune
from taskcut.config import load_config
from taskcut.data.synth import render
from taskcut.deploy.export import export
from taskcut.cut.fuse import fuse
from taskcut.models import build_model, save
from taskcut.cut.score import score
from taskcut.cut.select import select

TASKS = ["seg", "depth"]
FULL = {"depth": 34, "width": 1.0, "head_hidden": 1024, "head_dilations": [6, 12, 18, 24], "dropout": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sparsity", type=float, default=0.7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    torch.manual_seed(0)
    config = load_config("synth-tiny").model.model_copy(update=FULL)
    dense5 = build_model(config).eval()
    batches = []
    for b in range(2):
        items = [render(0, "train", 2 * b + i, *size) for i in range(2)]
        batches.append({k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]})

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {"dense, five tasks": save(dense5, tmp / "dense5.safetensors")}
        dense2 = select(dense5, TASKS)
        files["dense, seg+depth"] = save(dense2, tmp / "dense2.safetensors")
        scores = score(dense2, dense2.config.task_specs(), batches)
        unstructured = select(dense5, TASKS)
        apply_masks(unstructured, fuse(scores, args.sparsity, "vote").masks)
        files[f"CUT unstructured {args.sparsity:.0%}"] = save(unstructured, tmp / "unstructured.safetensors")
        structured = select(dense5, TASKS)
        structured_prune(structured, batches[0]["image"][:1], scores, args.sparsity, "vote")
        files[f"CUT structured {args.sparsity:.0%}"] = save(structured, tmp / "structured.safetensors")
        del unstructured, structured, dense2, dense5

        rows = {}
        for label, path in files.items():
            print(f"measuring {label} ...", flush=True)
            rows[label] = measure(path, "onnxruntime", args.threads, size, warmup=2, runs=args.runs)
        int8_path = tmp / "structured-int8.onnx"
        agreement = export(files[f"CUT structured {args.sparsity:.0%}"], "onnx", int8_path, int8=True, size=size)
        label = f"CUT structured {args.sparsity:.0%}, int8"
        print(f"measuring {label} ...", flush=True)
        rows[label] = {**measure_onnx_file(int8_path, args.threads, size, warmup=2, runs=args.runs),
                       "parameters": rows[f"CUT structured {args.sparsity:.0%}"]["parameters"]}

    base = rows["dense, five tasks"]
    print(f"\nSceneNet-ResNet-34, {size[0]}x{size[1]}, batch 1, ONNX Runtime CPU, {args.threads} threads, "
          f"median of {args.runs} warm runs")
    print(f"{'model':<30}{'params (M)':>11}{'x':>7}{'file (MB)':>11}{'x':>7}{'latency (ms)':>14}{'x':>7}")
    for label, r in rows.items():
        params = r.get("nonzero_parameters", r["parameters"]) if "unstructured" in label else r["parameters"]
        print(f"{label:<30}{params / 1e6:>11.2f}{params / base['parameters']:>7.3f}{r['file_bytes'] / 1e6:>11.1f}"
              f"{r['file_bytes'] / base['file_bytes']:>7.3f}{r['latency_ms_median']:>14.1f}"
              f"{r['latency_ms_median'] / base['latency_ms_median']:>7.3f}")
    s = rows[f"CUT structured {args.sparsity:.0%}"]
    u = rows[f"CUT unstructured {args.sparsity:.0%}"]
    print(f"targets: structured params <= 0.16x ({s['parameters'] / base['parameters']:.3f}x), structured latency "
          f"<= 0.25x ({s['latency_ms_median'] / base['latency_ms_median']:.3f}x), unstructured file <= 0.20x "
          f"({u['file_bytes'] / base['file_bytes']:.3f}x)")
    print("int8 agreement with the fp32 structured model (random weights, synth inputs): "
          + ", ".join(f"{t} {', '.join(f'{k} {v:.3g}' for k, v in r.items())}" for t, r in agreement.items()))


if __name__ == "__main__":
    main()
