"""The jobs every command runs, one code path for every model source.

A model source (`taskcut.jobs.source`) is a taskcut model file with its data (`KIND:PATH`), or
an own model's YAML naming its factory, weights, tasks and data: two ways to name the same
thing. Each job takes a source and one settings object (`taskcut.jobs.settings`) and returns a
record; the command line, the fleet, the comparison and Python call the same functions, so an
option works alike for both sources or is refused in one line:

```python
from taskcut import jobs

source = jobs.open_source(config="own.yaml")              # or jobs.open_source("base.safetensors", data="synth:DIR")
jobs.score(source, jobs.ScoringSettings(batches=50), "scores.safetensors")
result = jobs.prune(source, jobs.PruneSettings(tasks=["seg"], sparsity=0.7, scores="scores.safetensors"),
                    "compact.safetensors")
tuned = jobs.finetune(source, result.path, jobs.FinetuneSettings(steps=300), "tuned.safetensors")
report = jobs.evaluate(source, tuned.path, jobs.EvaluateSettings(baseline="base"))
record = jobs.export(source, tuned.path, jobs.ExportSettings(format="onnx"), "tuned.onnx")
```
The names are imported on first use, so importing this package costs nothing until a job runs.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_EXPORTS = {
    "Source": ".source", "FileSource": ".source", "YamlSource": ".source", "open_source": ".source",
    "source_of_file": ".source",
    "ScoringSettings": ".settings", "PruneSettings": ".settings", "FinetuneSettings": ".settings",
    "EvaluateSettings": ".settings", "ExportSettings": ".settings",
    "score": ".scoring", "ScoreResult": ".scoring", "prune": ".pruning", "PruneResult": ".pruning",
    "finetune": ".tuning", "FinetuneResult": ".tuning", "evaluate": ".evaluation", "export": ".exporting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'taskcut.jobs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
