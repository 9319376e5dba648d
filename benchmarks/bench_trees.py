"""Any benchmark script of two versions side by side in one run: a redesign must not slow anything.

Both versions (`--old REF`, `--new REF`, default HEAD) are checked out with `git worktree` into
temporary folders; each runs its own copy of the script (its API may differ) in a fresh process
with its own empty `TASKCUT_CACHE`, alternating old and new for `--rounds` rounds so that a noisy
moment hits both. Prints each run's wall time and the lines of its output that hold figures, then
the ratio of the medians (new / old).

Run: python benchmarks/bench_trees.py --old REF [--rounds 2] -- benchmarks/bench_fleet.py [its arguments]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tree: Path, script: list[str], cache: Path) -> tuple[float, str]:
    env = {**os.environ, "TASKCUT_CACHE": str(cache), "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *script], cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(script)} in {tree} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="git ref of the previous version")
    parser.add_argument("--new", default="HEAD", help="git ref of this version")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- the script (relative to the tree) and its "
                                                                  "arguments")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        raise SystemExit("give the benchmark script after --")
    times: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"old": tmp / "old", "new": tmp / "new"}
        for which, ref in (("old", args.old), ("new", args.new)):
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[which]), ref], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            for r in range(args.rounds):
                for which in ("old", "new"):
                    seconds, output = _run(trees[which], script, tmp / f"cache-{which}-{r}")
                    times[which].append(seconds)
                    print(f"round {r + 1}, {which}: {seconds:.1f} s", flush=True)
                    for line in output.splitlines():
                        if any(c.isdigit() for c in line):
                            print(f"    {line}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"\n{' '.join(script)}: median wall time old ({args.old}) {old:.1f} s, new ({args.new}) {new:.1f} s; "
          f"ratio new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
