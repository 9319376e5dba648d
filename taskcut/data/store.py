"""On-disk synth sets: compressed `.npz` shards plus a small JSON manifest that vouches for them.

The manifest records each shard's image count and SHA-256, so a reader can tell a set
that was truncated, edited or mixed with another before it trains on it. A set is written
into a temporary folder and renamed into place, so an interrupted run leaves no half set.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import TaskcutError, check_terminated
from ..fileio import clean_stale, folder_lock, inside, temp_prefix, file_sha256
from .synth import CLASS_NAMES, IGNORE_INDEX, SPLITS, TASKS, SynthOptions, render

FORMAT = "taskcut.synth"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_SIZE = 256

#: How each array is stored; the reader turns them back into float32 / int64.
STORED_DTYPES = {"image": np.uint8, "seg": np.uint8, "normal": np.float16, "depth": np.float16,
                 "keypoint": np.float16, "edge": np.float16}


def _encode(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, dtype in STORED_DTYPES.items():
        value = sample[key]
        if key == "image":
            value = np.round(value * 255.0)
        out[key] = value.astype(dtype)
    return out


def write_synth(out: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0,
                options: SynthOptions = SynthOptions(), force: bool = False,
                progress: Callable[[int], None] | None = None) -> Path:
    """Render and write a synth set to `out` (a folder); returns the manifest path.

    `progress` is called with the number of images just finished, for a progress bar.
    """
    height, width = size
    if height <= 0 or width <= 0:
        raise TaskcutError(f"image size must be positive, got {height}x{width}")
    for split, n in counts.items():
        if split not in SPLITS:
            raise TaskcutError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if n < 0:
            raise TaskcutError(f"the {split} split needs a non-negative image count, got {n}")
    if sum(counts.values()) == 0:
        raise TaskcutError("asked for an empty data set: give at least one image in some split")
    if out.exists() and not out.is_dir():
        raise TaskcutError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise TaskcutError(f"{out} already exists and is not empty; pass --force to replace it")

    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, exclusive=True):
        return _write_locked(out, counts, height, width, seed, options, force, progress)


def _write_locked(out: Path, counts: dict[str, int], height: int, width: int, seed: int, options: SynthOptions,
                  force: bool, progress: Callable[[int], None] | None) -> Path:
    if out.exists() and any(out.iterdir()) and not force:  # again, now that this run holds the lock
        raise TaskcutError(f"{out} already exists and is not empty; pass --force to replace it")
    clean_stale(out)
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
    try:
        manifest = {
            "format": FORMAT, "version": VERSION, "size": [height, width], "seed": seed,
            "options": asdict(options), "classes": list(CLASS_NAMES), "ignore_index": IGNORE_INDEX,
            "tasks": list(TASKS), "dtypes": {k: np.dtype(v).name for k, v in STORED_DTYPES.items()},
            "splits": {},
        }
        for split, n in counts.items():
            shards = []
            for start in range(0, n, SHARD_SIZE):
                stop = min(n, start + SHARD_SIZE)
                samples = []
                for index in range(start, stop):
                    check_terminated()
                    samples.append(_encode(render(seed, split, index, height, width, options)))
                    if progress is not None:
                        progress(1)
                arrays = {key: np.stack([s[key] for s in samples]) for key in STORED_DTYPES}
                name = f"{split}-{len(shards):04d}.npz"
                np.savez_compressed(staging / name, **arrays)
                shards.append({"file": name, "count": stop - start, "sha256": file_sha256(staging / name)})
            manifest["splits"][split] = {"count": n, "shards": shards}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        check_terminated()  # a stop asked for while native code ran is honoured before the set goes live
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=temp_prefix(out) + "old.", dir=out.parent))
            out.rename(trash / out.name)
            staging.rename(out)
            shutil.rmtree(trash)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / MANIFEST


def read_folder_json(root: Path, name: str, missing_hint: str, kind: str = "") -> Any:
    """The JSON file that describes a data folder (synth manifest, the papers' indexes), with clear errors."""
    if not root.is_dir():
        raise TaskcutError(f"data folder {root} does not exist")
    path = root / name
    if not path.is_file():
        raise TaskcutError(f"{root} has no {kind}{name}; {missing_hint}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TaskcutError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise TaskcutError(f"{path} is not valid JSON (not UTF-8 text)") from exc


def read_manifest(root: Path) -> dict:
    """The manifest of a synth set, checked against the shards beside it."""
    path = root / MANIFEST
    manifest = read_folder_json(root, MANIFEST, "is it a taskcut synth set? (make one with `taskcut data synth`)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise TaskcutError(f"{path} is not a taskcut synth manifest of version {VERSION}")
    return manifest


#: Splits read in this process, by what their files were when read: a demo or a fleet opens the same split
#: dozens of times (every fine-tuning, control and evaluation), and hashing and unpacking its shards each
#: time cost 0.18 s a time for synth-tiny. A file that changes (size, time or inode) is read and checked again.
_SPLITS: "OrderedDict[tuple, dict[str, np.ndarray]]" = OrderedDict()
_SPLITS_MAX_BYTES = 1 << 30


def _split_key(root: Path, split: str, entry: dict) -> tuple | None:
    """What identifies a split's files as they are now; None when a shard is missing (the read says so)."""
    files = [root / MANIFEST] + [root / str(s.get("file")) for s in entry["shards"] if isinstance(s, dict)]
    try:
        stats = [f.stat() for f in files]
    except OSError:
        return None
    return (str(root.resolve()), split,
            tuple((str(f), s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for f, s in zip(files, stats)))


def load_split(root: Path, split: str, verify: bool = True) -> dict[str, np.ndarray]:
    """All arrays of one split, in their stored dtypes, after checking every shard against the manifest.
    A split read before in this process, whose files have not changed since, is not read again; its
    arrays are shared, so callers copy before writing (`SynthDataset.batch` indexes, which copies)."""
    manifest = read_manifest(root)
    splits = manifest["splits"]
    if split not in splits:
        raise TaskcutError(f"{root} has no {split!r} split; it has {', '.join(splits) or 'none'}")
    entry = splits[split]
    key = _split_key(root, split, entry)
    if key is not None and key in _SPLITS:
        _SPLITS.move_to_end(key)
        return dict(_SPLITS[key])
    out = _read_split(root, manifest, split, entry, verify)
    size = sum(a.nbytes for a in out.values())
    if key is not None and verify and size <= _SPLITS_MAX_BYTES:
        for old in [k for k in _SPLITS if k[:2] == key[:2]]:  # the same split as its files were before
            del _SPLITS[old]
        while _SPLITS and size + sum(a.nbytes for v in _SPLITS.values() for a in v.values()) > _SPLITS_MAX_BYTES:
            _SPLITS.popitem(last=False)
        _SPLITS[key] = out
    return dict(out)


def _read_split(root: Path, manifest: dict, split: str, entry: dict, verify: bool) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {key: [] for key in STORED_DTYPES}
    for shard in entry["shards"]:
        file = inside(root, shard.get("file") if isinstance(shard, dict) else None, f"{root / MANIFEST}")
        if not file.is_file():
            raise TaskcutError(f"{file} is named in the manifest but missing")
        if verify and file_sha256(file) != shard["sha256"]:
            raise TaskcutError(f"{file} does not match its checksum in the manifest (changed or truncated)")
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in STORED_DTYPES}
        except (OSError, ValueError, KeyError) as exc:
            raise TaskcutError(f"{file} cannot be read as a synth shard ({exc})") from exc
        for key, value in arrays.items():
            if len(value) != shard["count"]:
                raise TaskcutError(f"{file} holds {len(value)} {key} arrays, the manifest says {shard['count']}")
            parts[key].append(value)
    total = sum(s["count"] for s in entry["shards"])
    if total != entry["count"]:
        raise TaskcutError(f"{root}: the {split} shards hold {total} images, the manifest says {entry['count']}")
    h, w = manifest["size"]
    out = {key: np.concatenate(v) if v else np.zeros((0,), STORED_DTYPES[key]) for key, v in parts.items()}
    if total and out["image"].shape[-2:] != (h, w):
        raise TaskcutError(f"{root}: images are {out['image'].shape[-2:]}, the manifest says {h}x{w}")
    return out

