"""Does a structured model's latency follow its MACs? Latency ratio against MAC ratio, side by side in one run.

For every structured model, both ratios are to the dense model on the same tasks, and the
"follows" figure is latency ratio / MAC ratio (1: time falls as MACs do; issue target <= 1.25).
Models: full-size SceneNet-ResNet-34 {seg, depth} (random weights, CUT scores on synth scenes)
cut structured at 50% and 70% of its parameters, wide layers kept at multiples of the channel step
each runtime runs convolutions in (measured here, `taskcut.deploy.widths`); and, with `--fleet DIR` (a `taskcut fleet`
output folder), every structured device of that fleet against its base model on its tasks.
Each runtime (ONNX Runtime and OpenVINO fp32) times every model and its dense reference in
alternation, `--rounds` times, so a noisy moment hits both; the median of each is kept.

Run: python benchmarks/bench_latency_macs.py [--fleet runs/fleet] [--threads 2] [--runs 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from taskcut.compact.structured import structured_prune
from taskcut.config import load_config
from taskcut.cut.score import score
from taskcut.cut.select import select
from taskcut.data.synth import render
from taskcut.deploy.bench import count_macs, latencies
from taskcut.deploy.export import baked
from taskcut.deploy.widths import channel_step
from taskcut.errors import TaskcutError
from taskcut.models import build_model, load

FULL = {"depth": 34, "width": 1.0, "head_hidden": 1024, "head_dilations": [6, 12, 18, 24], "dropout": 0.5}
TARGET = 1.25


def full_size(size: int, round_to: int) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(label, structured model, its dense reference) for ResNet-34 {seg, depth} at 50% and 70%, wide layers
    kept at multiples of `round_to` channels."""
    torch.manual_seed(0)
    dense5 = build_model(load_config("synth-tiny").model.model_copy(update=FULL)).eval()
    items = [render(0, "train", i, size, size) for i in range(4)]
    batch = {k: torch.from_numpy(np.stack([it[k] for it in items])).contiguous() for k in items[0]}
    dense = select(dense5, ["seg", "depth"]).model.eval()
    scores = score(dense, dense.config.task_specs(), [batch])
    out = []
    for sparsity in (0.5, 0.7):
        small = select(dense5, ["seg", "depth"]).model.eval()
        structured_prune(small, batch["image"][:1], scores, sparsity, "vote", round_to)
        out.append((f"ResNet-34 seg+depth, structured {sparsity:.0%}, step {round_to}", small, dense))
    return out


def fleet_devices(folder: Path) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(label, tuned model, the base it was pruned from on its tasks) for every structured device of a fleet run."""
    from safetensors import safe_open

    if "config_weights_sha256" in json.loads((folder / "settings.json").read_text()):
        raise SystemExit(f"{folder} is a fleet of an own model (config:); this benchmark takes a model file's fleet")
    with (folder / "fleet.csv").open() as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        if row["structured"] != "True":
            continue
        path = folder / "devices" / row["device"] / "tuned.safetensors"
        with safe_open(str(path), "pt") as f:
            source = Path(json.loads(f.metadata()["taskcut"])["provenance"]["source"])
        if not source.is_file():  # recorded as the fleet file named it: run from where the fleet ran
            raise SystemExit(f"{source}, the base model of {row['device']}, is not found from here; run this "
                             "benchmark from the folder the fleet ran in")
        dense = select(load(source).eval(), row["tasks"].split()).model.eval()
        out.append((f"fleet {row['device']} ({row['budget']})", load(path).eval(), dense))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=Path, default=None, help="a `taskcut fleet` output folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runtimes", default="onnxruntime,openvino")
    parser.add_argument("--skip-full", action="store_true", help="only the fleet's devices")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(1, 3, args.size, args.size)
    steps = {}
    for runtime in args.runtimes.split(","):
        try:
            steps[runtime] = channel_step(runtime, args.threads)
        except TaskcutError as exc:
            print(f"{runtime} skipped: {exc}")
    runtimes = list(steps)
    print("channel steps measured: " + ", ".join(f"{r} {s}" for r, s in steps.items()), flush=True)
    if not runtimes:
        raise SystemExit("no runtime to time in")
    models = [] if args.skip_full else [m for step in sorted(set(steps.values())) for m in full_size(args.size, step)]
    if args.fleet is not None:
        models += fleet_devices(args.fleet)
    print(f"{args.size}x{args.size}, batch 1, {args.threads} threads, median of {args.rounds} rounds of "
          f"{args.runs} warm runs; ratios to the dense model on the same tasks", flush=True)
    print(f"{'model':<52}{'runtime':<13}{'MACs x':>8}{'latency ms':>12}{'dense ms':>10}{'latency x':>11}"
          f"{'lat/MAC':>9}", flush=True)
    worst = 0.0
    for label, small, dense in models:
        a, b = baked(small), baked(dense)
        macs = count_macs(a, image) / count_macs(b, image)
        for runtime in runtimes:
            if label.startswith("ResNet") and not label.endswith(f"step {steps[runtime]}"):
                continue  # each runtime times the cut made at its own step
            times: dict[str, list[float]] = {"small": [], "dense": []}
            try:
                for _ in range(args.rounds):
                    for key, model in (("small", a), ("dense", b)):
                        times[key].append(statistics.median(latencies(model, image, runtime, args.threads,
                                                                      runs=args.runs)[0]) * 1e3)
            except TaskcutError as exc:
                print(f"{label:<52}{runtime:<13} skipped: {exc}")
                continue
            small_ms, dense_ms = statistics.median(times["small"]), statistics.median(times["dense"])
            ratio = small_ms / dense_ms
            worst = max(worst, ratio / macs)
            print(f"{label:<52}{runtime:<13}{macs:>8.3f}{small_ms:>12.2f}{dense_ms:>10.2f}{ratio:>11.3f}"
                  f"{ratio / macs:>9.2f}", flush=True)
    print(f"worst latency ratio / MAC ratio: {worst:.2f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
