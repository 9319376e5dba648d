"""Importing what a "module:name" reference names: a custom task's functions and a user's task kind.

Apart from the spec (`dense.py`) and the kinds (`kinds/`) so that both use it without importing each
other. It imports, which runs the module's code: callers import only references the user trusts
(`taskcut.trust`).
"""

from __future__ import annotations

import importlib
from typing import Any


def import_object(ref: str, what: str = "reference") -> Any:
    """The object "module:name" names (dotted attributes allowed: "mod:Class.method"); a `ValueError` naming
    `what` and the reference for a malformed one or one that does not import, whatever the module raises."""
    module, sep, attr = str(ref).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{what} {ref!r} is not of the form \"module:name\"")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
        raise ValueError(f"{what} {ref!r} does not import: {type(exc).__name__}: {exc}") from exc
    return obj
