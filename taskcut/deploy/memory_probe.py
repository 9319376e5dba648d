"""The child process `taskcut.deploy.artifact.peak_memory` runs: load an exported file in its runtime, run it
once on zeros, print the bytes that took (JSON on the last line of stdout).

The runtime and everything loading needs are imported first; then the peak resident set is reset
(`/proc/self/clear_refs`, Linux) and the resident set noted, so what is measured is loading and
one run, not the imports.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS: resident now, VmHWM: the peak)."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}: peak memory is measured on Linux only")
    return int(match.group(1)) * 1024


def main(argv: list[str]) -> None:
    path, runtime, threads, shape = Path(argv[0]), argv[1], int(argv[2]), json.loads(argv[3])
    import numpy as np

    from taskcut.deploy.export import open_runner
    from taskcut.deploy.formats import format_of_runtime

    form = format_of_runtime(runtime)
    form.module()  # the runtime's import, before the baseline
    feed = np.zeros(shape, dtype=np.float32)
    Path("/proc/self/clear_refs").write_text("5")  # the peak so far (the imports) is forgotten
    before = _status("VmRSS")
    runner = open_runner(path, form, threads)
    runner(feed)
    print(json.dumps({"peak_bytes": max(0, _status("VmHWM") - before), "baseline_bytes": before}))


if __name__ == "__main__":
    main(sys.argv[1:])
