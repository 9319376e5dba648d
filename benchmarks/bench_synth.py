"""Synth rendering speed on one core: images per second at a given size, against the 200/s target.

Run: python benchmarks/bench_synth.py [--size 64 64] [--images 400]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # one core, before numpy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402

from taskcut.data.synth import render  # noqa: E402

TARGET = 200.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    h, w = args.size
    render(0, "train", 0, h, w)  # warm-up
    rates = []
    for repeat in range(3):
        start = time.perf_counter()
        for i in range(args.images):
            render(repeat, "train", i, h, w)
        rates.append(args.images / (time.perf_counter() - start))
    best, median = max(rates), sorted(rates)[1]
    print(f"synth {h}x{w}, one core: median {median:.0f} images/s (best {best:.0f}) over 3 x {args.images}")
    print(f"ratio to the {TARGET:.0f} images/s target: {median / TARGET:.2f}x")


if __name__ == "__main__":
    main()
