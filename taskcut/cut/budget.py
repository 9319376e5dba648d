"""Budgets instead of guessed sparsities: the least pruning whose result fits a device.

A budget names a figure of the compact model and its ceiling: `params=1.5M` (parameters,
non-zero for masked models), `size=2MB` (bytes of the file the device's runtime loads, int8
when the device is; without a runtime, of taskcut's own model file), `transport=1MB` (that
file as the `.tar.xz` an update sends), `memory=64MB` (the peak memory the runtime adds to load
it and run one input of the device's size), `macs=500M` (multiply-accumulates of one image,
structured pruning), `latency=20ms` (structured; measured on this machine in the runtime).
`size` and `memory` on a runtime need structured pruning: a runtime file of an unstructured
model holds every weight, so only its download (`transport`) falls with sparsity. A bare number up to 1 is a fraction of the same figure of the
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

KINDS = ("params", "size", "transport", "memory", "macs", "latency")
STRUCTURED_ONLY = ("macs", "latency")
#: Figures of the file a runtime loads: measured only where the device's runtime is known.
RUNTIME_ONLY = ("transport", "memory")
#: Figures measured on the runtime's file when a runtime is given (`size` is taskcut's own file without one).
ON_ARTIFACT = ("size", "transport", "memory", "latency")
#: Bytes, whatever they count.
BYTES = ("size", "transport", "memory")
#: How far below its budget a result may land: timing is noisy, counts are not.
FLOOR = {"params": 0.97, "size": 0.97, "transport": 0.97, "memory": 0.97, "macs": 0.97, "latency": 0.90}
EXAMPLES = {"params": "1.5M", "size": "2MB", "transport": "1MB", "memory": "64MB", "macs": "500M", "latency": "20ms"}
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
        unit = " bytes" if self.kind in BYTES else " ms" if self.kind == "latency" else ""
        return f"{self.kind} <= {self.value:,.6g}{unit}"


def parse_budget(text: str) -> Budget:
    """`KIND=VALUE`: params=1.5M | size=2MB | transport=1MB | memory=64MB | macs=500M | latency=20ms, or
    KIND=FRACTION of the dense model's figure."""
    kind, sep, raw = str(text).partition("=")
    kind, raw = kind.strip(), raw.strip()
    if not sep or kind not in KINDS:
        raise TaskcutError(f"unknown budget {str(text)[:60]!r}; give KIND=VALUE with KIND one of {', '.join(KINDS)} "
                           "(e.g. params=1.5M, params=0.3, size=2MB, transport=1MB, memory=64MB, macs=500M, latency=20ms, "
                           "latency=0.5)")
    bare = re.fullmatch(r"(0?\.[0-9]+|1(?:\.0*)?)", raw)
    if bare and 0 < float(raw) <= 1:
        return Budget(kind, float(raw), relative=True)
    if kind in BYTES:
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
                           f"(e.g. {EXAMPLES[kind]})")
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



def check_measurable(kind: str, structured: bool, runtime: str | None) -> None:
    """Refuse, before any work, a budget that cannot be measured as asked: a runtime's figure without the
    runtime, or the size or memory of an unstructured model in a runtime (the runtime's file holds every
    weight, zeros too, so neither falls with sparsity: the search could never meet it)."""
    if kind in STRUCTURED_ONLY and not structured:
        raise TaskcutError(f"a {kind} budget needs structured pruning: unstructured zeros change neither MACs "
                           "nor latency")
    if kind in RUNTIME_ONLY and runtime is None:
        raise TaskcutError(f"a {kind} budget is measured on the file the device's runtime loads: give the "
                           "runtime (--runtime; runtime: for a fleet's device)")
    if runtime == "torch" and kind in BYTES:
        raise TaskcutError(f"a {kind} budget is measured on a runtime's file; eager torch has none: give an edge "
                           "runtime (onnxruntime, executorch, litert, openvino)")
    if runtime is not None and not structured and kind in ("size", "memory"):
        what = "size" if kind == "size" else "peak memory"
        raise TaskcutError(f"an unstructured model's file in {runtime} holds every weight, zeros too: its {what} "
                           "does not fall with sparsity; prune structured, or budget its download "
                           "(transport=...)")
