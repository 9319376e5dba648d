"""Task kinds: one module per kind, every kind found by name in one registry (`base.KINDS`).

The built-in kinds register themselves when this package is imported; a user's kind registers
the same way (`register(MyKind())`, see `base.py`) and then goes through every job.
"""

import importlib

from .base import KINDS, Kind, MapKind, kind_of, load_kind, reference_of, register

for _module in ("segmentation", "normal", "depth", "keypoint", "edge", "classification", "regression", "binary",
                "custom"):
    importlib.import_module(f".{_module}", __name__)

#: The built-in kinds, in the order they registered.
BUILT_IN: tuple[str, ...] = tuple(KINDS)

__all__ = ["BUILT_IN", "KINDS", "Kind", "MapKind", "kind_of", "load_kind", "reference_of", "register"]
