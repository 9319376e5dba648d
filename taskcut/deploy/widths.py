"""The channel step a runtime runs convolutions in, measured on this machine (for structured pruning).

CPU kernels compute output channels in blocks (ONNX Runtime's and OpenVINO's blocked layouts take
16 channels at a time with AVX-512, 8 with AVX2): a layer cut to 20 channels costs what 32 cost,
so its MACs fall and its time does not. Structured pruning keeps the channel count of wide layers
at a multiple of the runtime's step, and the step is measured, not guessed: one 3x3 convolution is
exported to the runtime at a range of output widths and timed; the step is the widest block for
which rounding a width up to it costs no time. The result is kept in the cache per runtime, int8,
threads, runtime version and CPU, so a machine measures each once (a few seconds).
"""

from __future__ import annotations

import hashlib
import json
import platform
import functools
import statistics
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import TaskcutError
from ..fileio import write_text
from ..progress import console

#: Output widths the probe convolution is timed at (multiples of 4: two or more in every block of 8 to 32).
WIDTHS = tuple(range(4, 65, 4))
#: Steps that can be chosen, smallest first: 8 (the rounding used before steps were measured, and what
#: ragged widths were measured against) when no wider one is free.
STEPS = (8, 16, 32)
#: Rounding a width up within its block is free when it costs at most this much more time (noise ~3%).
FREE = 0.08
#: The probe: 128 input channels, 3x3, at 28x28 (a stride-8 feature map of a 224-pixel image): enough
#: work per call that its blocks show through the runtime's fixed cost.
PROBE_IN, PROBE_SIZE = 128, 28
#: Rounds over all widths (a width's time is the median of its rounds, so a slow moment hits every width).
ROUNDS = 5
#: Sessions opened per width: a session can run a layer slower than another one of the same file does
#: (seen with ONNX Runtime: 1.3-1.6x for a whole session), so a width's time is its fastest session's.
SESSIONS = 3
#: Largest cache file read (a few hundred bytes a runtime).
CACHE_BYTES = 1 << 16
#: Bumped when the measurement changes, so cached steps of an older probe are measured again.
REVISION = 3


class _Probe(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(PROBE_IN, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probe": torch.relu(self.conv(x))}


def choose_step(times: Mapping[int, float]) -> int:
    """The widest step in `STEPS` whose blocks are free: a width in a block's lower half costs no more than
    `FREE` less than the block's upper half (its fastest width there: noise on a busy machine makes a
    width slower, never faster, so one slow width does not decide), for all but at most one width;
    8 when no wider step is free. Widest, not first: a step of 32 that is free makes 16 free too,
    whatever noise says of one of 16's blocks."""
    chosen = STEPS[0]
    for step in STEPS[1:]:
        rises = []
        for block in {-(-w // step) for w in times}:
            top = block * step
            upper = [t for w, t in times.items() if top - step // 2 < w <= top]
            lower = [t for w, t in times.items() if top - step < w <= top - step // 2]
            if upper and lower:
                rises += [min(upper) / t - 1.0 for t in lower]
        if rises and sum(r > FREE for r in rises) <= 1:
            chosen = step
    return chosen


def measure_times(runtime: str, threads: int, int8: bool = False, runs: int = 20) -> dict[int, float]:
    """Seconds of the probe convolution at each of `WIDTHS` in `runtime` (int8 when asked): each width's
    file is opened in `SESSIONS` sessions, each timed in `ROUNDS` rounds over all of them; a width's time is
    the fastest session's median of its round medians."""
    import tempfile

    from .artifact import Deployment, write_artifact
    from .bench import _time
    from .export import open_runner
    from .formats import format_of_runtime

    torch.manual_seed(0)
    image = torch.rand(1, PROBE_IN, PROBE_SIZE, PROBE_SIZE)
    deployment = Deployment(runtime, int8, threads,
                            torch.rand(8, PROBE_IN, PROBE_SIZE, PROBE_SIZE) if int8 else None)
    rounds: dict[tuple[int, int], list[float]] = {(w, s): [] for w in WIDTHS for s in range(SESSIONS)}
    feed = image.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for width in WIDTHS:
            folder = Path(tmp) / str(width)
            folder.mkdir()
            path = write_artifact(_Probe(width).eval(), image, deployment, folder, ["probe"])
            for session in range(SESSIONS):
                runners[width, session] = runner = open_runner(path, format_of_runtime(runtime), threads, ["probe"])
                _time(lambda: runner(feed), 5, 0)  # warm-up
        for _ in range(ROUNDS):
            for key, runner in runners.items():
                rounds[key].append(statistics.median(_time(lambda: runner(feed), 0, runs)))
    return {w: min(statistics.median(rounds[w, s]) for s in range(SESSIONS)) for w in WIDTHS}


@functools.cache
def _machine() -> str:
    """What the measurement depends on besides the runtime: the CPU (model and flags) and this Python."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")[:200_000]
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
        cpu = "\n".join(dict.fromkeys(lines)) or cpu
    except OSError:
        pass
    return hashlib.sha256(cpu.encode()).hexdigest()[:16]


@functools.cache
def _version(runtime: str) -> str:
    """The installed version of the distribution that provides the runtime's import (its `Format.package`)."""
    from .formats import format_of_runtime

    top = format_of_runtime(runtime).package.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    return metadata.version(dists[0]) if dists else "unknown"


def _read(path: Path) -> dict[str, int]:
    """The cached steps; an unreadable, oversized, deeply nested or out-of-range file, or one that is not a
    regular file, is measured again (a file is data)."""
    try:
        if not path.is_file():
            return {}
        with path.open("rb") as f:
            text = f.read(CACHE_BYTES + 1)
        if len(text) > CACHE_BYTES:
            return {}
        data = json.loads(text)
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and type(v) is int and v in STEPS}


def channel_step(runtime: str, threads: int = 2, int8: bool = False, cache: Path | None = None,
                 measure: Callable[[str, int, bool], Mapping[int, float]] | None = None) -> int:
    """The channel step `runtime` runs convolutions in on this machine (fp32, or int8 with `int8`) with
    `threads`: measured once per machine and kept in `cache` (default `$TASKCUT_CACHE/widths.json`)."""
    from ..cache import cache_dir
    from .bench import check_runtime, check_timing

    if runtime == "torch":
        raise TaskcutError("eager torch is not an edge runtime: channel steps are measured in one")
    check_runtime(runtime, int8)
    check_timing(threads)
    path = Path(cache) if cache is not None else cache_dir() / "widths.json"
    key = f"{runtime}|{'int8' if int8 else 'fp32'}|{threads}t|{_version(runtime)}|{_machine()}|r{REVISION}"
    known = _read(path)
    if key in known:
        return known[key]
    console.print(f"measuring the channel step {runtime}{' int8' if int8 else ''} runs convolutions in "
                  "(once on this machine)", highlight=False)
    step = choose_step((measure or measure_times)(runtime, threads, int8))
    known[key] = step
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(known, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only cache: measured again next time, said once
        console.print(f"could not keep the channel step in {path} ({exc.strerror or exc})", highlight=False)
    return step
