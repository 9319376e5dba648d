"""taskcut: prune a pre-trained multi-task model into a compact model holding only the tasks a device needs.

The CUT stages, each a plain function: `decompose` -> `select` -> `score` -> `fuse` ->
`apply_masks` -> fine-tune -> evaluate; `save`/`load` for model files.
"""

__version__ = "0.1.0"

from .compact.masking import apply_masks  # noqa: E402
from .cut.decompose import Decomposition, decompose  # noqa: E402
from .cut.fuse import Fusion, fuse  # noqa: E402
from .models import load, save  # noqa: E402
from .cut.score import score  # noqa: E402
from .cut.select import select  # noqa: E402

__all__ = ["Decomposition", "Fusion", "__version__", "apply_masks", "decompose", "fuse", "load", "save", "score",
           "select"]
