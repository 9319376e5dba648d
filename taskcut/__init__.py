"""taskcut: prune a pre-trained multi-task model into a compact model holding only the tasks a device needs."""

__version__ = "0.1.0"

from .models import load, save  # noqa: E402

__all__ = ["__version__", "load", "save"]
