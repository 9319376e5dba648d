"""Forward hooks for the length of a block: every reader of a model's forward (MAC counting, the
layers that write each task's output, call order, output shapes) needs them removed afterwards,
whatever happens inside."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

from torch import nn


@contextlib.contextmanager
def forward_hooks(modules: Iterable[nn.Module], hook: Callable[[nn.Module, Any, Any], None]) -> Iterator[None]:
    """`hook(module, inputs, output)` runs after each of `modules`' forwards inside the block."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
