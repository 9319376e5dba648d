"""`taskcut demo` from an empty cache: the previous release against this tree, side by side in one run.

The previous release (default: the commit before the pre-trained model shipped) and this
version (default: HEAD) are checked out with `git worktree` into temporary folders; each demo runs in a fresh process with its
own empty `TASKCUT_CACHE`, alternating old and new for `--rounds` rounds, so a noisy moment
hits both. It prints each cold time, the ratio (new / old, medians), and whether this tree's
demo gave the same figures (the devices' and the comparison's) on every one of its runs.

Run: python benchmarks/bench_demo.py [--old REF] [--rounds 1]     (about 10 minutes a round here)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The last commit whose demo trained its base model on the spot.
PREVIOUS = "b1bc20c"
FIGURES = ("device", "tasks", "budget", "reached", "budget_ratio", "sparsity", "delta_T_vs_dense",
           "delta_T_vs_control", "params_nonzero", "file_bytes", "export_bytes")


def _run(tree: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "TASKCUT_CACHE": str(cache), "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "taskcut.cli", "demo", "--out", str(out), "--quiet"],
                            cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the demo of {tree} failed:\n{result.stderr[-3000:]}")
    return seconds


def _figures(out: Path) -> dict:
    result = json.loads((out / "results.json").read_text())
    print(f"  seconds: {json.dumps({k: round(v) for k, v in result['seconds'].items()})}", flush=True)
    devices = [{k: d.get(k) for k in FIGURES} for d in result["devices"]]
    comparison = [{k: r.get(k) for k in ("method", "sparsity", "delta_T", "delta_T_vs_control")}
                  for r in result["comparison"]]
    return {"devices": devices, "comparison": comparison}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default=PREVIOUS, help="git ref of the previous release")
    parser.add_argument("--new", default="HEAD", help="git ref of this version (a worktree, so the tree may change "
                                                      "while it runs)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"old": [], "new": []}
    figures: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_tree, new_tree = tmp / "old", tmp / "new"
        for tree, ref in ((old_tree, args.old), (new_tree, args.new)):
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            for r in range(args.rounds):
                for which, tree in (("old", old_tree), ("new", new_tree)):
                    out = tmp / f"{which}-{r}"
                    seconds = _run(tree, out, tmp / f"cache-{which}-{r}")
                    times[which].append(seconds)
                    print(f"round {r + 1}: {which} demo, cold: {seconds:.0f} s", flush=True)
                    if which == "new":
                        figures.append(_figures(out))
            if args.rounds == 1:  # the figures must repeat: one more cold run of this tree
                # names as long as the first run's: paths under them are recorded in the files, and a size
                # budget measures the file, so the figures must not depend on how long a folder name is
                out = tmp / "new-1"
                seconds = _run(new_tree, out, tmp / "cache-new-1")
                times["new"].append(seconds)
                print(f"again: new demo, cold: {seconds:.0f} s", flush=True)
                figures.append(_figures(out))
        finally:
            for tree in (old_tree, new_tree):
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"\ncold demo, median: previous release ({args.old}) {old:.0f} s, this tree {new:.0f} s; "
          f"ratio new/old {new / old:.2f} (target <= 0.4)")
    same = [name for name in ("devices", "comparison") if all(f[name] == figures[0][name] for f in figures)]
    print(f"this tree's figures identical on its {len(figures)} cold runs: {', '.join(same) or 'none'}")
    for device in figures[0]["devices"]:
        varying = sorted({k for f in figures for d in f["devices"] if d["device"] == device["device"]
                          for k, v in d.items() if v != device[k]})
        print(f"  {device['device']}: {'identical' if not varying else 'differs in ' + ', '.join(varying)}")
    print(json.dumps(figures[0]))


if __name__ == "__main__":
    main()
