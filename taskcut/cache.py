"""Where generated data lives between runs, so a second `train` or `demo` reuses it."""

from __future__ import annotations

import os
from pathlib import Path

from .config import DataConfig
from .data.store import read_manifest, write_synth
from .data.synth import SynthOptions
from .errors import TaskcutError
from .progress import progress_bar


def cache_dir() -> Path:
    """`$TASKCUT_CACHE`, else `$XDG_CACHE_HOME/taskcut`, else `~/.cache/taskcut`."""
    if os.environ.get("TASKCUT_CACHE"):
        return Path(os.environ["TASKCUT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "taskcut"


def synth_set(config: DataConfig, show_progress: bool = True) -> Path:
    """The synth set described by `config`, generated into the cache unless a valid copy is there."""
    h, w = config.size
    name = f"synth-{h}x{w}-seed{config.seed}-{config.train}-{config.val}-{config.test}-sw{config.soft_width:g}-kw{config.keypoint_width:g}"
    root = cache_dir() / "data" / name
    try:
        manifest = read_manifest(root)
        counts_ok = all(manifest["splits"].get(s, {}).get("count") == n
                        for s, n in (("train", config.train), ("val", config.val), ("test", config.test)))
        if counts_ok and manifest["size"] == [h, w]:
            return root
    except TaskcutError:
        pass
    total = config.train + config.val + config.test
    with progress_bar(show_progress) as bar:
        job = bar.add_task("render synth", total=total, info=f"{h}x{w}")
        write_synth(root, {"train": config.train, "val": config.val, "test": config.test}, (h, w),
                    seed=config.seed, options=SynthOptions(soft_width=config.soft_width, keypoint_width=config.keypoint_width), force=True,
                    progress=lambda n: bar.update(job, advance=n))
    return root
