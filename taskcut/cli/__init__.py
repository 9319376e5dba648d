"""The `taskcut` command line: thin wrappers over the public functions, one subcommand each.

One module per command group — `model` (info, prune, score), `training` (train, finetune,
evaluate), `workflows` (fleet, compare, demo), `data` (data synth/show, import), `deploy`
(export, bench) — over `common` (the app, shared options, one-line errors) and `render`
(tables). Each command imports what it runs when it runs, so `taskcut --help` answers at once.
"""

from .common import app, main
from . import model, training, workflows, data, deploy  # each registers its commands on `app`

__all__ = ["app", "main", "model", "training", "workflows", "data", "deploy"]
