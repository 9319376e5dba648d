"""`taskcut export`: a model file exported for an edge runtime, checked against eager PyTorch in that
runtime, and evaluated there on the source's data, for any source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fileio import check_writable
from .settings import ExportSettings
from .source import Source


def export(source: Source, model_file: Path, settings: ExportSettings, out: Path, *,
           force: bool = False) -> dict[str, Any]:
    """Export `model_file` to `settings.format` at `out` (fp32, or int8 calibrated on the train split);
    the record written beside it (`FILE.taskcut.json`) is returned: the parity check on sample inputs
    and, where the source has data, the file's metrics on `settings.split` in its runtime."""
    from ..deploy.export import check_options, export_module, file_set

    out = Path(out)
    source.check_export(settings)
    form = check_options(settings.format, settings.int8, out)
    for path in file_set(out, form):
        check_writable(path, force)
    record, _ = source.open_model(Path(model_file), "cpu")
    model, specs = record.model, record.tasks
    samples, calibration, evaluation, where = source.export_inputs(Path(model_file), specs, settings)
    return export_module(model, out, samples, settings.format, calibration, specs, evaluation,
                         source={"model": str(model_file), **where})
