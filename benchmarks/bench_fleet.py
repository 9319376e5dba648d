"""Scoring a fleet once against scoring each device separately, side by side in one run.

Six devices with task subsets of 1 to 5 tasks on the synth-tiny base model (trained and
cached as the demo does). (a) `taskcut score` once for every task, then each device pruned
from the scores file with no forward or backward pass; (b) `prune` scoring each device's
selection itself, as one would without a fleet; (c) the six devices again, as a fleet's further
devices are pruned (each task's scores sorted once per fleet, on first use). The masks are
checked to be equal. With
`--full`, a latency budget on full-size SceneNet-ResNet-34 at 224x224 (ONNX Runtime, 2
threads) is met and the figure reached is printed against the budget.

Run: python benchmarks/bench_fleet.py [--batches 50] [--full]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

DEVICES = [["seg"], ["depth"], ["seg", "depth"], ["normal", "edge"], ["seg", "normal", "depth"],
           ["seg", "normal", "depth", "keypoint", "edge"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--full", action="store_true", help="also the full-size latency budget (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from taskcut.compact.masking import masks_of
    from taskcut.workflows.demo import base_model
    from taskcut.jobs.pruning import prune
    from taskcut.jobs.scoring import score
    from taskcut.jobs.settings import PruneSettings, ScoringSettings
    from taskcut.jobs.source import open_source
    from taskcut.models import load

    base, data = base_model(show_progress=False)
    source = open_source(base, data=data)
    scoring = ScoringSettings(batches=args.batches, batch_size=8)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        score(source, scoring, tmp / "scores.safetensors", show_progress=False)
        once = time.perf_counter() - start
        reused, further, separate, equal = 0.0, 0.0, 0.0, True
        for i, tasks in enumerate(DEVICES):
            a, b = tmp / f"a{i}.safetensors", tmp / f"b{i}.safetensors"
            start = time.perf_counter()
            prune(source, PruneSettings(tasks=tasks, sparsity=0.7, scores=tmp / "scores.safetensors"), a, force=True,
                  show_progress=False)
            reused += time.perf_counter() - start
            summary = prune(source, PruneSettings(tasks=tasks, sparsity=0.7, scoring=scoring), b, force=True,
                            show_progress=False)
            separate += summary.seconds_scoring
            ma, mb = masks_of(load(a)), masks_of(load(b))
            equal &= all(torch.equal(ma[n], mb[n]) for n in ma)
        # six more devices with the same task sets: what every further device of a fleet costs, each
        # task's scores already sorted (once per fleet); their masks must be the first six's
        for i, tasks in enumerate(DEVICES):
            c = tmp / f"c{i}.safetensors"
            start = time.perf_counter()
            prune(source, PruneSettings(tasks=tasks, sparsity=0.7, scores=tmp / "scores.safetensors"), c, force=True,
                  show_progress=False)
            further += time.perf_counter() - start
            ma, mc = masks_of(load(tmp / f"a{i}.safetensors")), masks_of(load(c))
            equal &= all(torch.equal(ma[n], mc[n]) for n in ma)
    print(f"six devices, synth-tiny, {args.batches} scoring batches of 8, 2 threads")
    print(f"  scoring once for all five tasks:          {once:7.2f} s")
    print(f"  pruning six devices from the scores file: {reused:7.2f} s (no forward or backward); one device "
          f"{reused / len(DEVICES):.3f} s = {reused / len(DEVICES) / once:.3f} x one scoring pass (each task's scores "
          "sorted on first use, once per fleet)")
    print(f"  six further devices:                      {further:7.2f} s; one device {further / len(DEVICES):.3f} s = "
          f"{further / len(DEVICES) / once:.3f} x one scoring pass (target <= 0.02): what each device adds to a fleet")
    print(f"  scoring each device separately:           {separate:7.2f} s")
    print(f"  scoring time ratio (separate / once):     {separate / once:7.2f}x; masks equal: {equal}")
    if args.full:
        full_latency_budget()


def full_latency_budget() -> None:
    from taskcut.cut.prune import prune_to_budget
    from taskcut.config import load_config
    from taskcut.cut.score import score
    from taskcut.cut.select import select
    from taskcut.data.synth import render
    from taskcut.deploy.bench import latencies
    from taskcut.deploy.export import baked
    from taskcut.models import build_model
    import numpy as np
    import statistics

    overrides = {"depth": 34, "width": 1.0, "head_hidden": 1024, "head_dilations": [6, 12, 18, 24], "dropout": 0.5}
    config = load_config("synth-tiny").model.model_copy(update=overrides)
    torch.manual_seed(0)
    model = select(build_model(config).eval(), ["seg", "depth"]).model
    items = [render(0, "train", i, 224, 224) for i in range(4)]
    batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
    scores = score(model, model.config.task_specs(), [batch])
    image = batch["image"][:1]
    dense = statistics.median(latencies(baked(model), image, runs=5)[0]) * 1e3
    budget = f"latency={dense * 0.4:.0f}ms"
    start = time.perf_counter()
    small, report = prune_to_budget(model, scores, budget, structured=True, example=image)
    print(f"SceneNet-ResNet-34 (seg, depth), 224x224, ONNX Runtime 2 threads: dense {dense:.1f} ms; {budget}: "
          f"reached {report['reached']:.1f} ms ({report['ratio']:.2f} x the budget) at sparsity "
          f"{report['sparsity']:.3f}, search {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
