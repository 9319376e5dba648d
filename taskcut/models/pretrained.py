"""Pre-trained base models shipped inside the package (safetensors, spec and provenance in the file).

The demo prunes a pre-trained model, as the method does; training it is a command of its own
(`taskcut train --preset synth-tiny`). Shipping the file makes the demo start at once and
give the same figures on every machine: a model trained on another CPU differs bit for bit.
Each file's SHA-256 is recorded here, so a damaged or replaced file is refused.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import TaskcutError

#: name -> how it was made and its hash (`tools/ship_base_model.py` writes the file).
PRETRAINED: dict[str, dict[str, Any]] = {
    "synth-tiny": {"command": "taskcut train --preset synth-tiny",
                   "sha256": "d034d0fb52a737355d91032cbfd34acfb99aa1d28759d6483bb673e3a6632dfa"},
}


def pretrained_path(name: str, check: bool = True) -> Path:
    """The shipped file of base model `name`, checked against its recorded hash."""
    from ..fileio import file_sha256

    if name not in PRETRAINED:
        raise TaskcutError(f"no pre-trained model {name!r}; shipped: {', '.join(PRETRAINED)}")
    path = Path(str(resources.files("taskcut") / "pretrained" / f"{name}.safetensors"))
    if check:
        if not path.is_file():
            raise TaskcutError(f"the pre-trained model {path} is missing from the installed package; reinstall "
                               f"taskcut, or make it with {PRETRAINED[name]['command']}")
        if file_sha256(path) != PRETRAINED[name]["sha256"]:
            raise TaskcutError(f"the pre-trained model {path} is damaged or was replaced (its hash differs); "
                               "reinstall taskcut")
    return path
