"""`taskcut evaluate`: per-task metrics of a model file on a split, delta_T against a dense baseline
and against the dense control (the baseline fine-tuned like the model), for any source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import TaskcutError, check_choice
from ..fileio import check_writable, write_text
from .settings import EvaluateSettings
from .source import Source


def evaluate(source: Source, model_file: Path, settings: EvaluateSettings, out: Path | None = None, *,
             force: bool = False, device: str = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Metrics of `model_file` on `settings.split`; with `settings.baseline`, the baseline's on the same
    tasks and delta_T; with `settings.control` (default) and a fine-tuned model, also delta_T against
    the dense control: the baseline restricted to the same tasks and fine-tuned with the model's own
    schedule (trained once and cached), so a gain the control shows too is the extra training."""
    from ..tasks.dense import delta_fields
    from ..tasks.maps import CONVENTIONS

    check_choice(list(CONVENTIONS), [settings.metrics], "metric convention", "conventions:")
    source.check_control(settings.baseline, settings.control)
    if out is not None:
        check_writable(Path(out), force)
    record, spec = source.open_model(Path(model_file), device)
    model, specs = record.model, record.tasks
    data = source.split_data(specs, settings.split, device)
    metrics = source.metrics(model, specs, data, settings.metrics, device)
    report: dict[str, Any] = {"model": str(model_file), "split": settings.split, **source.data_record(),
                              "convention": settings.metrics, "metrics": metrics}
    if settings.baseline is not None:
        baseline = source.baseline(settings.baseline, list(specs), device)
        base_metrics = source.metrics(baseline, specs, data, settings.metrics, device)
        report["baseline"] = {"model": str(settings.baseline), "metrics": base_metrics}
        report["baseline"].update(delta_fields(metrics, base_metrics, specs))
        if settings.control is not False:
            made = source.control(settings.baseline, list(specs), spec, device, show_progress)
            if made is None and settings.control:
                raise TaskcutError(f"--control: {source.no_control(settings.baseline)}")
            if made is not None:
                control, path, schedule = made
                control_metrics = source.metrics(control, specs, data, settings.metrics, device)
                report["control"] = {"model": str(path), "metrics": control_metrics, "finetune": schedule}
                report["control"].update(delta_fields(metrics, control_metrics, specs))
    if out is not None:
        write_text(Path(out), json.dumps(report, indent=2))
    return report
