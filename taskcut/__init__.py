"""taskcut: prune a pre-trained multi-task model into compact models holding only the tasks a device needs.

One call per job on any multi-task `nn.Module` (forward returns `{task: tensor}`):
`prune_model`, `finetune_model`, `evaluate_model`, `export_model`, with tasks described by
`Task` and models kept in files by `save`/`load`. The CUT stages underneath, each a plain
function: `decompose` -> `select` -> `score` -> `fuse` -> `apply_masks`.
"""

__version__ = "0.1.0"

from .api import evaluate_model, export_model, finetune_model, prune_model  # noqa: E402
from .compact.masking import apply_masks  # noqa: E402
from .cut.decompose import Decomposition, decompose  # noqa: E402
from .cut.fuse import Fusion, fuse  # noqa: E402
from .cut.score import score  # noqa: E402
from .cut.select import select  # noqa: E402
from .errors import TaskcutError  # noqa: E402
from .models import load, save  # noqa: E402
from .tasks import Task  # noqa: E402

__all__ = ["Decomposition", "Fusion", "Task", "TaskcutError", "__version__", "apply_masks", "decompose",
           "evaluate_model", "export_model", "finetune_model", "fuse", "load", "prune_model", "save", "score",
           "select"]
