"""Budgets instead of guessed sparsities: the least pruning whose result fits a device.

A budget names a figure of the compact model and its ceiling: `params=1.5M` (parameters,
non-zero for masked models), `size=2MB` (bytes of the written model file), `macs=500M`
(multiply-accumulates of one image, structured pruning), `latency=20ms` (structured;
measured on this machine). A bare number up to 1 is a fraction of the same figure of the
dense model on the same tasks (`params=0.3`, `latency=0.5`): such a budget means the same on
any machine, which an absolute latency does not. Every
figure falls as sparsity rises, so the sparsity is found by a bracketing search on the measured
figure: the result is within the budget and not far below it (`FLOOR`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import TaskcutError

KINDS = ("params", "size", "macs", "latency")
STRUCTURED_ONLY = ("macs", "latency")
#: How far below its budget a result may land: timing is noisy, counts are not.
FLOOR = {"params": 0.97, "size": 0.97, "macs": 0.97, "latency": 0.90}
_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "G": 1e9, "g": 1e9}
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}
_TIME = {"ms": 1.0, "s": 1e3, "us": 1e-3}


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float            # params, bytes, MACs or milliseconds; a fraction when `relative`
    relative: bool = False

    def __str__(self) -> str:
        if self.relative:
            return f"{self.kind} <= {self.value:g} x the dense model"
        unit = {"size": " bytes", "latency": " ms"}.get(self.kind, "")
        return f"{self.kind} <= {self.value:,.6g}{unit}"


def parse_budget(text: str) -> Budget:
    """`KIND=VALUE`: params=1.5M | size=2MB | macs=500M | latency=20ms, or KIND=FRACTION of the dense model."""
    kind, sep, raw = str(text).partition("=")
    kind, raw = kind.strip(), raw.strip()
    if not sep or kind not in KINDS:
        raise TaskcutError(f"unknown budget {str(text)[:60]!r}; give KIND=VALUE with KIND one of {', '.join(KINDS)} "
                           "(e.g. params=1.5M, params=0.3, size=2MB, macs=500M, latency=20ms, latency=0.5)")
    bare = re.fullmatch(r"(0?\.[0-9]+|1(?:\.0*)?)", raw)
    if bare and 0 < float(raw) <= 1:
        return Budget(kind, float(raw), relative=True)
    if kind == "size":
        m = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)\s*([kKmMgG]i?[bB]|[bB])?", raw)
        value = float(m.group(1)) * _BYTES[(m.group(2) or "b").lower()] if m else math.nan
    elif kind == "latency":
        m = re.fullmatch(r"([0-9.]+)\s*(ms|s|us)", raw)
        value = float(m.group(1)) * _TIME[m.group(2)] if m else math.nan
    else:
        m = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)\s*([kKmMgG]?)", raw)
        value = float(m.group(1)) * _SCALE[m.group(2)] if m else math.nan
    if not math.isfinite(value) or value <= 0:
        raise TaskcutError(f"budget {str(text)[:60]!r}: {raw[:40]!r} is not a positive {kind} figure "
                           f"(e.g. {dict(params='1.5M', size='2MB', macs='500M', latency='20ms')[kind]})")
    return Budget(kind, value)


def least_pruning(measure: Callable[[float], float], target: float, kind: str, max_sparsity: float,
                  unit: str = "") -> tuple[float, float]:
    """The smallest sparsity whose measured figure is within `target`, and that figure.

    `measure(sparsity)` prunes a copy and measures it; it must fall as sparsity rises. Stops
    as soon as a result lies in [FLOOR x target, target]. A budget even the most pruned model
    (`max_sparsity`) exceeds is an error naming the smallest figure reachable.
    """
    dense = measure(0.0)
    if dense <= target:
        return 0.0, dense
    most = measure(max_sparsity)
    if most > target:
        raise TaskcutError(f"budget {kind} <= {target:,.6g}{unit} cannot be met: the most pruned model "
                           f"(sparsity {max_sparsity:g}) has {most:,.6g}{unit}; nothing written")
    # Regula falsi aimed at the middle of the accepted window [FLOOR x target, target]: the figures
    # fall smoothly with sparsity (parameters exactly linearly), so interpolating between the bracket's
    # ends lands in the window in one or two measurements where bisection needs five or more; each
    # latency measurement is an export and a timing run. When one end of the bracket has stayed put
    # twice (a curved figure), the next step bisects, so the bracket always keeps shrinking.
    aim = 0.5 * (1.0 + FLOOR[kind]) * target
    # stop a quarter into the window, not at its floor: a file written afterwards with its real
    # provenance (or a latency timed again) may differ a little from the figure measured here
    stop = (FLOOR[kind] + 0.25 * (1.0 - FLOOR[kind])) * target
    lo, hi, f_lo, f_hi, best = 0.0, max_sparsity, dense, most, (max_sparsity, most)
    moved: list[str] = []
    for _ in range(30):
        t = (f_lo - aim) / (f_lo - f_hi) if f_lo > f_hi else 0.5
        if moved[-2:] in (["lo", "lo"], ["hi", "hi"]):
            t = 0.5
        mid = lo + min(max(t, 0.05), 0.95) * (hi - lo)
        figure = measure(mid)
        if figure <= target:
            best, hi, f_hi = (mid, figure), mid, figure
            moved.append("hi")
            if figure >= stop:
                break
        else:
            lo, f_lo = mid, figure
            moved.append("lo")
    return best

