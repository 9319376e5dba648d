"""taskcut: prune a pre-trained multi-task model into compact models holding only the tasks a device needs.

One call per job on any multi-task `nn.Module` (forward returns `{task: tensor}`):
`prune_model`, `finetune_model`, `evaluate_model`, `export_model`, with tasks described by
`Task` and models kept in files by `save`/`load`. Each job that makes a model returns a
`TaskModel` record (the module, its tasks, how to rebuild it, the budget met), which the
next job, `save` and `export_model` take as it is. The CUT stages underneath, each a plain
function: `decompose` -> `select` -> `score` -> `fuse` -> `apply_masks`.

The jobs the command line runs on a model file or an own model's YAML, one code path for
both, are `taskcut.jobs` (`open_source`, `score`, `prune`, `finetune`, `evaluate`, `export`
with one settings object each).

The names are imported on first use (PEP 562), so `import taskcut` and the command line's
`--help` do not pay for torch; `from taskcut import prune_model` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "evaluate_model": ".api", "export_model": ".api", "finetune_model": ".api", "prune_model": ".api",
    "apply_masks": ".compact.masking",
    "Decomposition": ".cut.decompose", "decompose": ".cut.decompose",
    "Fusion": ".cut.fuse", "fuse": ".cut.fuse",
    "score": ".cut.score",
    "select": ".cut.select",
    "TaskcutError": ".errors",
    "load": ".models", "open_model": ".models", "save": ".models", "TaskModel": ".models",
    "Task": ".tasks",
    "trusting": ".trust",
}

__all__ = ["Decomposition", "Fusion", "Task", "TaskModel", "TaskcutError", "__version__", "apply_masks", "decompose",
           "evaluate_model", "export_model", "finetune_model", "fuse", "load", "open_model", "prune_model", "save",
           "score", "select", "trusting"]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .api import evaluate_model, export_model, finetune_model, prune_model
    from .compact.masking import apply_masks
    from .cut.decompose import Decomposition, decompose
    from .cut.fuse import Fusion, fuse
    from .cut.score import score
    from .cut.select import select
    from .errors import TaskcutError
    from .models import TaskModel, load, open_model, save
    from .tasks import Task
    from .trust import trusting


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if name in ("models", "api", "cut", "compact", "tasks", "deploy", "data", "train", "jobs", "workflows", "report"):
        return importlib.import_module(f".{name}", __name__)  # `taskcut.models.read_spec` after `import taskcut`
    raise AttributeError(f"module 'taskcut' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
