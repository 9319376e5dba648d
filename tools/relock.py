"""Regenerate `requirements-lock.txt`: every package of every extra at one exact version.

Why a lock: pip's resolver, given `.[dev]` with all four runtime extras and open ranges,
backtracks for more than 20 minutes; with every version fixed it has nothing to search.
This script resolves once, in a fresh virtual environment, in the two steps that finish
(the package with `transformers` first, then the rest of the extras), each under the torch
pin, then writes `pip freeze` as a constraints file. Run it when a requirement in
`pyproject.toml` changes (the test `tests/test_lock.py` says when):

    python tools/relock.py            # about 4 minutes with a warm pip cache
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"
TORCH = "torch==2.13.0"


def _extras_requirements() -> list[str]:
    """The requirements of every extra except those naming taskcut itself (they are unions of the others)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out: list[str] = []
    for reqs in project.get("optional-dependencies", {}).values():
        out += [r for r in reqs if not r.replace(" ", "").startswith("taskcut[")]
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=True)
        pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        pin = Path(tmp) / "torch.txt"
        pin.write_text(TORCH + "\n")
        extras = _extras_requirements()
        first = [r for r in extras if r.startswith("transformers")]
        subprocess.run([*pip, "-c", str(pin), "-e", str(ROOT), *first], check=True)
        subprocess.run([*pip, "-c", str(pin), *[r for r in extras if r not in first]], check=True)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "check"], check=True)
        frozen = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
                                check=True, capture_output=True, text=True).stdout
    lines = sorted({_public(line) for line in frozen.splitlines() if "==" in line}, key=str.lower)
    header = ("# Exact versions of every package of taskcut and all its extras, resolved by tools/relock.py.\n"
              "# Use as a pip constraints file: pip install -e '.[dev]' -c requirements-lock.txt\n")
    LOCK.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {LOCK} ({len(lines)} packages)", file=sys.stderr)


def _public(line: str) -> str:
    """`torch==2.13.0+cpu` -> `torch==2.13.0`: a local label would tie the lock to one wheel index."""
    name, _, version = line.strip().partition("==")
    return f"{name}=={version.split('+')[0]}"


if __name__ == "__main__":
    main()
