"""Writing outputs safely: atomically, and never over a file the user did not ask to replace."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import errno
import os
import shutil
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


def temp_prefix(path: Path) -> str:
    """Temporary files and folders beside `path` carry the writer's pid, so a later run can tell a
    leftover of a killed run (its pid gone) from another run's work in progress."""
    return f".{path.name}.{os.getpid()}."


def clean_stale(path: Path) -> list[Path]:
    """Remove the temporaries of `path` that runs killed before they could clean up; return them."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = entry.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash, an error or SIGTERM mid-write leaves the old file (or no file), never half a
    file; the data is flushed to disk before the rename. Leftovers of killed runs are removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def folder_lock(folder: Path, exclusive: bool, what: str = "writing") -> Iterator[None]:
    """A lock beside a folder (`.NAME.lock`): one writer at a time (a second fails at once, clearly),
    and readers wait while a writer swaps the folder in, so they never see half a set.

    The lock file is removed by whoever holds it last alone (a writer always, a reader when no one
    else holds it), also after an error or SIGTERM, so none is left beside the folder. A process
    that locked a file which was removed meanwhile locks the new one instead.
    """
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.lock"
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            handle.close()
            raise TaskcutError(f"another taskcut run is {what} {folder}; wait for it to finish") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # removed by its last holder while this process waited: lock the new one
    try:
        yield
    finally:
        try:
            if not exclusive:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # alone now? then it is ours to remove
            os.unlink(lock)
        except (BlockingIOError, FileNotFoundError):
            pass
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts, keys in first-seen order) as a CSV file, written atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_tensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """A safetensors file written atomically. A full disk is an `OSError(ENOSPC)` naming `path`, whichever
    layer noticed it: safetensors reports it as a `SafetensorError` whose text carries the OS error."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except SafetensorError as exc:
        if is_disk_full(exc):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
        raise


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error is a full disk: ENOSPC, or a library's error whose text says so (os error 28)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or f"os error {errno.ENOSPC})" in text


def read_csv(path: Path, text: tuple[str, ...] = (), booleans: tuple[str, ...] = (),
             missing: object = None) -> list[dict]:
    """The rows `write_csv` wrote, with their types back: `text` columns as strings, `booleans` as
    bools, integers as ints (a resumed table keeps 300069, not 300069.0), other numbers as floats,
    and empty or "None" cells as `missing`."""
    import csv
    import io

    def value(key: str, cell: str) -> object:
        if key in text:
            return cell
        if key in booleans:
            return cell == "True"
        if cell in ("", "None"):
            return missing
        try:
            return int(cell)
        except ValueError:
            return float(cell)

    if not path.is_file():
        return []
    return [{k: value(k, v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(path.read_text()))]


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file, read in chunks (data shards and model files are checked with it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
