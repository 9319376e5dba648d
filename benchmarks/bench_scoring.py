"""CUT scoring cost: taskcut's `score` against the reference procedure, side by side in one run.

Three rows separate the two gains (plus taskcut on all five tasks):
1. the published procedure on the full model: a full forward and backward per batch for
   every one of the five tasks;
2. the published procedure on the selected model (2 of 5 tasks, unselected heads removed):
   row 1 / row 2 is the gain of selecting before scoring;
3. taskcut's `score` on the selected model: one forward per batch, one backward per
   selected task; row 2 / row 3 is the gain of one forward; row 1 / row 3 is both.

Each procedure runs in its own fresh process, so its peak resident memory (above the
process's memory once the model and batches are ready) is its own. Scores are written by
the workers and compared here. Models have random weights: cost does not depend on them.

Run: python benchmarks/bench_scoring.py [--model tiny|full|both] [--batches N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SELECTED = ["seg", "depth"]
MODELS = {
    # name: (preset overrides, image size, batch size)
    "tiny": ({}, 64, 8),
    "full": ({"depth": 34, "width": 1.0, "head_hidden": 1024, "head_dilations": [6, 12, 18, 24], "dropout": 0.5},
             224, 2),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(model_name: str, n_batches: int, tasks: list[str] | None):
    import numpy as np
    import torch

    from taskcut.config import load_config
    from taskcut.data.synth import render
    from taskcut.models import build_model

    overrides, size, batch_size = MODELS[model_name]
    config = load_config("synth-tiny").model.model_copy(update=overrides)
    torch.manual_seed(0)
    model = build_model(config)
    if tasks is not None:  # the selected model, built directly (same weights as selecting from the full one)
        from taskcut.cut.select import select

        model = select(model, tasks).model
    batches = []
    for b in range(n_batches):
        items = [render(0, "train", b * batch_size + i, size, size) for i in range(batch_size)]
        batches.append({k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]})
    return model, batches


def worker(mode: str, model_name: str, n_batches: int, out: Path) -> None:
    from safetensors.torch import save_file

    from taskcut.cut.score import score, score_reference

    tasks = SELECTED if mode in ("two", "ref-two") else None
    model, batches = _setup(model_name, n_batches, tasks)
    specs = model.config.task_specs()
    if tasks is not None:
        specs = {t: specs[t] for t in SELECTED}
    base = _rss_bytes()
    start = time.perf_counter()
    scores = score_reference(model, specs, batches) if mode.startswith("ref") else score(model, specs, batches)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    save_file({f"{t}|{n}": v.contiguous() for t, s in scores.items() for n, v in s.items()}, str(out))
    print(json.dumps({"seconds": seconds, "peak_above_setup": peak - base}))


def _run(mode: str, model_name: str, n_batches: int, threads: int, tmp: Path) -> tuple[dict, Path]:
    out = tmp / f"{model_name}-{mode}.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", mode, "--model", model_name, "--batches", str(n_batches),
           "--scores", str(out), "--threads", str(threads)]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), out


def _max_rel_diff(ours: Path, ref: Path) -> tuple[float, int]:
    from safetensors import safe_open

    worst, compared = 0.0, 0
    with safe_open(str(ours), "pt") as a, safe_open(str(ref), "pt") as b:
        ref_keys = set(b.keys())
        for key in a.keys():
            if key not in ref_keys:
                raise SystemExit(f"score {key} missing from the reference")
            x, y = a.get_tensor(key), b.get_tensor(key)
            scale = float(y.abs().max())
            if scale > 0:
                worst = max(worst, float((x - y).abs().max()) / scale)
            compared += 1
    return worst, compared


def compare(model_name: str, n_batches: int, threads: int, repeats: int) -> None:
    """Workers run interleaved (ref, ref-two, two, five, ref, ...); each figure is the best of `repeats`."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runs: dict[str, list[dict]] = {"ref": [], "ref-two": [], "two": [], "five": []}
        paths: dict[str, Path] = {}
        for _ in range(repeats):
            for mode in runs:
                result, paths[mode] = _run(mode, model_name, n_batches, threads, tmp)
                runs[mode].append(result)
        ref, ref_two, two, five = ({"seconds": min(r["seconds"] for r in runs[m]),
                                    "peak_above_setup": min(r["peak_above_setup"] for r in runs[m])} for m in runs)
        diff_sel, n_sel = _max_rel_diff(paths["ref-two"], paths["ref"])
        diff_two, n_two = _max_rel_diff(paths["two"], paths["ref-two"])
        diff_five, n_five = _max_rel_diff(paths["five"], paths["ref"])
    _, size, batch_size = MODELS[model_name]
    print(f"\n== {model_name}: SceneNet, 5 tasks, {size}x{size}, {n_batches} batches of {batch_size}, "
          f"{threads} threads, best of {repeats} interleaved runs ==")
    print(f"{'procedure':<50}{'seconds':>9}{'peak MB':>10}{'vs row 1':>10}{'memory':>9}")
    rows = [("1 published: fwd+bwd per task, 5 tasks, full model", ref),
            ("2 published: fwd+bwd per task, 2 tasks, selected", ref_two),
            ("3 taskcut score: 1 fwd, 2 tasks, selected", two),
            ("  taskcut score: 1 fwd, 5 tasks, full model", five)]
    for label, r in rows:
        print(f"{label:<50}{r['seconds']:>9.2f}{r['peak_above_setup'] / 1e6:>10.0f}"
              f"{ref['seconds'] / r['seconds']:>9.2f}x{r['peak_above_setup'] / ref['peak_above_setup']:>8.2f}x")
    selection, one_forward = ref["seconds"] / ref_two["seconds"], ref_two["seconds"] / two["seconds"]
    print(f"gains: selection (1/2) {selection:.2f}x, one forward (2/3) {one_forward:.2f}x, "
          f"both (1/3) {selection * one_forward:.2f}x; one forward on all five tasks {ref['seconds'] / five['seconds']:.2f}x")
    print(f"scores agree: row 2 vs row 1 max rel. diff {diff_sel:.2e} over {n_sel} tensors; row 3 vs row 2 "
          f"{diff_two:.2e} over {n_two}; five tasks vs row 1 {diff_five:.2e} over {n_five}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "full", "both"], default="both")
    parser.add_argument("--batches", type=int, default=None, help="default: 30 for tiny, 2 for full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=["ref", "ref-two", "two", "five"], help=argparse.SUPPRESS)
    parser.add_argument("--scores", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        worker(args.worker, args.model, args.batches, args.scores)
        return
    for name in (["tiny", "full"] if args.model == "both" else [args.model]):
        compare(name, args.batches or (30 if name == "tiny" else 2), args.threads, args.repeats)


if __name__ == "__main__":
    main()
