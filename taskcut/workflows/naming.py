"""How a comparison names its rows and files: (method, fine-tuning recipe) labels, cells, the controls.

Shared by the comparison that writes them and the report that reads them, so neither imports
the other.
"""

from __future__ import annotations

FINETUNES = ("plain", "distill")


def label(method: str, finetune: str) -> str:
    """How a (method, recipe) pair is named in rows, tables and plots."""
    return method if finetune == "plain" else f"{method}+{finetune}"


def cell_name(method: str, sparsity: float, seed: int) -> str:
    return f"{method}-s{sparsity:g}-seed{seed}"


CONTROL = "dense+ft"
#: The control rows' labels: plain fine-tuning, and with distillation.
CONTROLS = frozenset(label(CONTROL, recipe) for recipe in FINETUNES)
