"""How fast the command line answers: `taskcut --help`, `taskcut CMD --help` and an argument error,
median of 5 fresh processes each, beside what importing torch alone costs (what every one of
these paid before torch was imported only when a command runs).

Target: each at most 0.3 s on a 2-core machine. Run: python benchmarks/bench_cli.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "taskcut --help": ["--help"],
    "taskcut prune --help": ["prune", "--help"],
    "taskcut fleet --help": ["fleet", "--help"],
    "taskcut prune --bogus (argument error)": ["prune", "--bogus"],
}


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("taskcut")
    base = [exe] if exe else [sys.executable, "-m", "taskcut.cli"]
    reference = [sys.executable, "-c", "import torch"]
    _seconds([*base, "--help"])  # compile the .pyc files once
    times: dict[str, list[float]] = {name: [] for name in [*CASES, "python -c 'import torch'"]}
    for _ in range(args.runs):  # interleaved, so a noisy moment hits every case alike
        for name, argv in CASES.items():
            times[name].append(_seconds([*base, *argv]))
        times["python -c 'import torch'"].append(_seconds(reference))
    torch_s = statistics.median(times["python -c 'import torch'"])
    print(f"median of {args.runs} fresh processes ({' '.join(base)}):")
    for name, values in times.items():
        median = statistics.median(values)
        verdict = "" if name.startswith("python") else ("  ok (<= 0.3 s)" if median <= 0.3 else "  OVER 0.3 s")
        print(f"  {name:<42} {median:6.3f} s  ({median / torch_s:.2f} x importing torch){verdict}")


if __name__ == "__main__":
    main()
