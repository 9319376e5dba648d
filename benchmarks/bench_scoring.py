"""CUT scoring cost: taskcut's `score` against the reference procedure, side by side in one run.

Reference (the published code's procedure): for every one of the five tasks, a full
forward and backward per batch. taskcut: one forward per batch and one backward per
*selected* task, on the model restricted to the selected tasks (2 of 5), and on all five.

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

        model = select(model, tasks)
    batches = []
    for b in range(n_batches):
        items = [render(0, "train", b * batch_size + i, size, size) for i in range(batch_size)]
        batches.append({k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]})
    return model, batches


def worker(mode: str, model_name: str, n_batches: int, out: Path) -> None:
    from safetensors.torch import save_file

    from taskcut.cut.score import score, score_reference

    tasks = SELECTED if mode == "two" else None
    model, batches = _setup(model_name, n_batches, tasks)
    specs = model.config.task_specs()
    if mode == "two":
        specs = {t: specs[t] for t in SELECTED}
    base = _rss_bytes()
    start = time.perf_counter()
    scores = score_reference(model, specs, batches) if mode == "ref" else score(model, specs, batches)
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
    """Workers run interleaved (ref, two, five, ref, ...); each figure is the best of `repeats`."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runs: dict[str, list[dict]] = {"ref": [], "two": [], "five": []}
        paths: dict[str, Path] = {}
        for _ in range(repeats):
            for mode in runs:
                result, paths[mode] = _run(mode, model_name, n_batches, threads, tmp)
                runs[mode].append(result)
        ref, two, five = ({"seconds": min(r["seconds"] for r in runs[m]),
                           "peak_above_setup": min(r["peak_above_setup"] for r in runs[m])} for m in runs)
        ref_path, two_path, five_path = paths["ref"], paths["two"], paths["five"]
        diff_two, n_two = _max_rel_diff(two_path, ref_path)
        diff_five, n_five = _max_rel_diff(five_path, ref_path)
    _, size, batch_size = MODELS[model_name]
    print(f"\n== {model_name}: SceneNet, 5 tasks, {size}x{size}, {n_batches} batches of {batch_size}, "
          f"{threads} threads, best of {repeats} interleaved runs ==")
    print(f"{'procedure':<36}{'seconds':>9}{'peak MB':>10}{'speed-up':>10}{'memory':>9}")
    rows = [("reference: fwd+bwd per task, 5 tasks", ref), ("taskcut score, 2 of 5 (selected)", two),
            ("taskcut score, 5 of 5", five)]
    for label, r in rows:
        print(f"{label:<36}{r['seconds']:>9.2f}{r['peak_above_setup'] / 1e6:>10.0f}"
              f"{ref['seconds'] / r['seconds']:>9.2f}x{r['peak_above_setup'] / ref['peak_above_setup']:>8.2f}x")
    print(f"scores agree with the reference: 2 of 5 max rel. diff {diff_two:.2e} over {n_two} tensors; "
          f"5 of 5 {diff_five:.2e} over {n_five}")
    print(f"targets: 2 of 5 >= 3x faster ({ref['seconds'] / two['seconds']:.2f}x), 5 of 5 >= 1.6x "
          f"({ref['seconds'] / five['seconds']:.2f}x), 2 of 5 peak memory <= 0.6x "
          f"({two['peak_above_setup'] / ref['peak_above_setup']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "full", "both"], default="both")
    parser.add_argument("--batches", type=int, default=None, help="default: 30 for tiny, 2 for full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=["ref", "two", "five"], help=argparse.SUPPRESS)
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
