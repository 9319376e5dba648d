"""Writing outputs safely: atomically, and never over a file the user did not ask to replace."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import TaskcutError


def inside(root: Path, relative: object, what: str) -> Path:
    """`root / relative` for a path read from a file in `root` (a manifest, an index); a path that
    is absolute, climbs out with `..`, or resolves (through links) outside `root` is refused, named."""
    text = str(relative)
    if not isinstance(relative, str) or not text or Path(text).is_absolute() or ".." in Path(text).parts:
        raise TaskcutError(f"{what} names {text[:200]!r}, which is not a path inside {root}; refused")
    path = root / text
    base = root.resolve()
    if path.resolve() != base and base not in path.resolve().parents:
        raise TaskcutError(f"{what} names {text[:200]!r}, which leads outside {root}; refused")
    return path


def check_writable(path: Path, force: bool) -> None:
    """Refuse an existing output unless `force`, before any work is done."""
    if path.exists() and not force:
        raise TaskcutError(f"{path} already exists; pass --force to replace it")
    if path.exists() and path.is_dir():
        raise TaskcutError(f"{path} is a directory, not a file")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash or an error mid-write leaves the old file (or no file), never half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file, read in chunks (data shards and model files are checked with it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
