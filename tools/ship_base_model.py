"""Train the synth-tiny base model that `taskcut demo` prunes, and write it into the package.

The method starts from a pre-trained model, so the demo does too: the file ships in
`taskcut/pretrained/synth-tiny.safetensors`, and its figures are the same on every machine.
Its provenance records how to make it again (the command, the preset, the seed, the data
set's generation settings) and the test metrics it reached, which
`tests/test_pretrained_slow.py` compares with a fresh `taskcut train --preset synth-tiny`.

    python tools/ship_base_model.py        # about 6 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from taskcut import __version__
from taskcut.config import load_config
from taskcut.train.runs import metrics_path, train_base
from taskcut.models import load, save
from taskcut.models.pretrained import PRETRAINED, pretrained_path


def main() -> None:
    name = "synth-tiny"
    config = load_config(name)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "base.safetensors"
        train_base(config, trained, force=True)
        report = json.loads(metrics_path(trained).read_text())
        model = load(trained)
    provenance = {
        "taskcut": __version__, "preset": name, "command": PRETRAINED[name]["command"],
        "seed": config.train.seed, "training_data": {**config.data.model_dump(mode="json")},
        "best_step": report["best_step"], "steps": config.train.steps, "test": report["test"],
        "train_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
        "python": platform.python_version(), "created": time.strftime("%Y-%m-%d"),
    }
    out = pretrained_path(name, check=False)
    save(model, out, provenance)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
