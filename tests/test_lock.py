"""The lock (`requirements-lock.txt`) pins every package that taskcut and its extras require, at a
version each requirement of `pyproject.toml` admits; the README's commands and CI install with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"lock line {line!r} is not an exact pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "taskcut"]


def test_every_requirement_is_locked_at_an_admitted_version() -> None:
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements-lock.txt: run python tools/relock.py"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"the lock has {name}=={pins[name]}, pyproject.toml asks {req}: run python tools/relock.py"


def test_torch_is_the_pinned_cpu_release() -> None:
    assert _lock()["torch"] == Version("2.13.0")


def test_readme_and_ci_install_with_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(pip install[^\n]*)\n```", readme)
    assert len(commands) >= 2 and all("-c requirements-lock.txt" in c for c in commands[:2]), commands[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in ci and "venv" in ci
