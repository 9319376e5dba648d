"""`taskcut fleet FLEET.yaml --out DIR`: one pre-trained model, many devices, one scoring pass.

```yaml
base: base.safetensors            # a taskcut model file
data: synth:scenes                # scored on its train split, tuned on train, chosen on val, judged on test
scoring: {batches: 50, batch_size: 8}
finetune: {steps: 300, batch_size: 32, lr: 0.0005, val_every: 50}   # + distill: {weight: 1.0} to learn
                                                                   # from the dense model too
bench: {threads: 2, size: [224, 224], runs: 10}
devices:
  - {name: doorbell, tasks: [seg], budget: "params=0.2"}
  - {name: robot, tasks: [seg, depth, normal], budget: "macs=150M", structured: true}
```

Every task of the base model is scored once (`taskcut score`); each device is then pruned
to its budget from those scores with no further forward or backward pass, fine-tuned,
evaluated against the dense model on its tasks and against the dense control (the same
fine-tuning), exported to ONNX with the parity check, and benched. A finished device is a
row of `fleet.csv` and is not recomputed when the run is resumed; `fleet.html` shows them.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import time
from pathlib import Path
from typing import Annotated, Any, Callable

import yaml
from pydantic import Field, ValidationError, field_validator

from ..config import DistillConfig
from ..settings import MAX_BATCH, MAX_IMAGE_SIDE, MAX_RUNS, MAX_THREADS, Strict, safe_yaml
from ..cut.budget import ON_ARTIFACT, STRUCTURED_ONLY, check_measurable, parse_budget
from ..deploy.formats import format_of_runtime
from ..deploy.widths import channel_step
from ..errors import TaskcutError
from ..fileio import file_sha256, folder_lock, read_csv, write_csv, write_text
from ..models.io import zoo_spec
from ..progress import console


class Device(Strict):
    #: A folder name under --out: letters, digits, `_`, `-` and `.`, but not `.` or `..` alone.
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    tasks: list[str] = Field(min_length=1)
    budget: str
    structured: bool = False
    runtime: str = "onnxruntime"
    int8: bool = False

    @field_validator("name")
    @classmethod
    def _a_folder(cls, v: str) -> str:
        if v in (".", ".."):
            raise ValueError(f"{v!r} is no device name (it would write outside the device's folder)")
        return v

    @field_validator("tasks")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        twice = sorted({t for t in v if v.count(t) > 1})
        if twice:
            raise ValueError(f"task(s) {', '.join(twice)} named twice")
        return v

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str) -> str:
        parse_budget(v)
        return v


class Scoring(Strict):
    batches: int = Field(default=50, ge=1)
    #: Images per scoring batch: default 8 for a data set; an own model's batches are re-batched to it.
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)


class Finetune(Strict):
    steps: int = Field(default=300, ge=1)
    #: Images per step: default 32 on a data set; an own model's batches are re-batched to it.
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    lr: float = Field(default=5e-4, gt=0)
    val_every: int = Field(default=50, ge=1)
    #: The dense model teaches each device's model (`taskcut.train.distill`); `{}` takes the defaults.
    distill: DistillConfig | None = None


class Bench(Strict):
    threads: int = Field(default=2, ge=1, le=MAX_THREADS)
    size: tuple[Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)], Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]] = \
        (224, 224)
    runs: int = Field(default=10, ge=1, le=MAX_RUNS)


class Fleet(Strict):
    base: Path | None = None          # a taskcut model file ...
    config: Path | None = None        # ... or an own model's YAML (factory, weights, tasks, data)
    data: str | None = None
    scoring: Scoring = Field(default_factory=Scoring)
    finetune: Finetune = Field(default_factory=Finetune)
    bench: Bench = Field(default_factory=Bench)
    devices: list[Device] = Field(min_length=1)


def load_fleet(path: Path) -> Fleet:
    """The fleet file, checked whole before anything runs: devices, tasks and budgets."""
    path = Path(path)
    if not path.is_file():
        raise TaskcutError(f"fleet file {path} does not exist")
    try:
        data = safe_yaml(path.read_text(), f"fleet file {path}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TaskcutError(f"fleet file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TaskcutError(f"fleet file {path} must hold a mapping")
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise TaskcutError(f"fleet file {path} at {where}: {err['msg']}") from None
    if (fleet.base is None) == (fleet.config is None):
        raise TaskcutError(f"fleet file {path}: give either base: (a taskcut model file) or config: (an own model's YAML)")
    if fleet.base is not None and fleet.data is None:
        raise TaskcutError(f"fleet file {path}: a base model file needs data: KIND:PATH")
    if fleet.config is not None and fleet.data is not None:
        raise TaskcutError(f"fleet file {path}: data: does not apply with config: (an own model's YAML names its "
                           "data); leave it out")
    for key in ("base", "config"):
        value = getattr(fleet, key)
        if value is not None and not value.is_absolute():
            setattr(fleet, key, path.parent / value)
    names = [d.name for d in fleet.devices]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TaskcutError(f"fleet file {path}: device name(s) {', '.join(twice)} used twice")
    if fleet.config is not None:
        from ..models.own_config import load_own_config

        model_tasks = list(load_own_config(fleet.config).specs)
    else:
        model_tasks = list(zoo_spec(fleet.base)["model"]["tasks"])
    for device in fleet.devices:
        unknown = [t for t in device.tasks if t not in model_tasks]
        if unknown:
            raise TaskcutError(f"device {device.name!r} names task(s) {', '.join(unknown)} that {fleet.base or fleet.config} lacks "
                               f"(it has {', '.join(model_tasks)})")
        kind = parse_budget(device.budget).kind
        if kind in STRUCTURED_ONLY and not device.structured:
            raise TaskcutError(f"device {device.name!r}: a {kind} budget needs structured: true")
        try:
            check_measurable(kind, device.structured, device.runtime if kind in ON_ARTIFACT else None)
            from ..deploy.bench import check_runtime

            check_runtime(device.runtime, device.int8)
            if device.runtime == "torch":
                raise TaskcutError("eager torch is not an edge runtime")
        except TaskcutError as exc:
            raise TaskcutError(f"device {device.name!r}: {exc}") from None
    return fleet


def run_fleet(path: Path, out: Path, device: str = "cpu", show_progress: bool = True) -> list[dict[str, Any]]:
    """Score once, then prune, fine-tune, evaluate, export and bench every device; resumable per device.
    One run at a time writes `out`: a second fails at once, naming it."""
    fleet = load_fleet(path)
    out = Path(out)
    with folder_lock(out, exclusive=True, what="running a fleet into"):
        return _run_fleet(fleet, out, device, show_progress)


def _run_fleet(fleet: Fleet, out: Path, device: str, show_progress: bool) -> list[dict[str, Any]]:
    from ..jobs.source import open_source

    (out / "devices").mkdir(parents=True, exist_ok=True)
    source = open_source(fleet.base, fleet.config, fleet.data)
    if fleet.config is not None:
        from ..trust import trusting

        with trusting(source.cfg.references()):  # the user's YAML names its code: trusted
            return _run_source(fleet, source, out, device, show_progress)
    return _run_source(fleet, source, out, device, show_progress)


def _run_source(fleet: Fleet, source: Any, out: Path, device: str, show_progress: bool) -> list[dict[str, Any]]:
    """Score every task once into the fleet's scores file, then per device: prune from it, fine-tune,
    evaluate, export and bench; the same for a model file and an own model's YAML."""
    from ..deploy.bench import measure
    from ..jobs.pruning import prune
    from ..jobs.scoring import score
    from ..jobs.settings import PruneSettings, ScoringSettings

    scoring, _ = source.scoring(ScoringSettings(**fleet.scoring.model_dump()), None, None)
    settings = {"base_sha256": file_sha256(source.name), "data": fleet.data, "scoring": scoring.model_dump(),
                "finetune": fleet.finetune.model_dump(exclude_none=True)}
    if fleet.config is None:
        from ..jobs.source import FINETUNE_BATCH_SIZE

        settings["finetune"].setdefault("batch_size", FINETUNE_BATCH_SIZE)
    if fleet.config is not None:
        cfg = source.cfg
        settings["config_weights_sha256"] = file_sha256(cfg._resolve(cfg.model.weights)) if cfg.model.weights else None
        settings["scoring"] = {k: v for k, v in settings["scoring"].items() if v is not None}
    _claim(out, settings)
    scores, timing = out / "scores.safetensors", out / "scoring.json"
    if not scores.is_file() or not timing.is_file():
        console.print(f"fleet: scoring every task of {source.name.name} once", highlight=False)
        start = time.perf_counter()
        score(source, scoring, scores, force=True, device=device, show_progress=show_progress)
        write_text(timing, json.dumps({"seconds": time.perf_counter() - start}))
    dense = measure(source.base_file(out), "onnxruntime", fleet.bench.threads, tuple(fleet.bench.size),
                    runs=fleet.bench.runs)

    def one(dev: Device, folder: Path) -> dict[str, Any]:
        compact, tuned = folder / "compact.safetensors", folder / "tuned.safetensors"
        exported = folder / f"model{format_of_runtime(dev.runtime).suffix}"
        kind = parse_budget(dev.budget).kind
        deployed = kind in ON_ARTIFACT  # measured on the device's file: its runtime, int8 or not, the fleet's threads
        # a structured device keeps wide layers at the channel step its runtime runs fast, whatever its budget
        step = channel_step(dev.runtime, fleet.bench.threads, dev.int8) if dev.structured else None
        settings = PruneSettings(tasks=dev.tasks, budget=dev.budget, structured=dev.structured, scores=scores,
                                 runtime=dev.runtime if deployed else None, int8=dev.int8 if deployed else False,
                                 threads=fleet.bench.threads if deployed else None,
                                 size=tuple(fleet.bench.size) if kind in STRUCTURED_ONLY else None, round_to=step)
        summary = prune(source, settings, compact, force=True, device=device, show_progress=show_progress)
        assert summary is not None and summary.budget is not None
        report, record = _tune_and_deploy(fleet, dev, compact, tuned, folder, exported, device, show_progress)
        bench = _bench(tuned, exported, fleet, dev, record)
        return _row(dev, summary.budget, report["baseline"]["delta_T"], report.get("control", {}).get("delta_T"),
                    summary.params_after, tuned, bench, dense, record)

    rows = _each_device(fleet, out, one, {**settings, "scores_sha256": file_sha256(scores)})
    write_text(out / "fleet.html", _html(fleet, rows, dense, float(json.loads(timing.read_text())["seconds"])))
    return rows


def _tune_and_deploy(fleet: Fleet, dev: Device, compact: Path, tuned: Path, folder: Path, exported: Path,
                     device: str, show_progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune a device's compact model, evaluate it against the dense model and its control, export it
    to the device's runtime: the same jobs for a model file and an own model."""
    from ..jobs.evaluation import evaluate
    from ..jobs.exporting import export
    from ..jobs.tuning import finetune
    from ..jobs.settings import EvaluateSettings, ExportSettings, FinetuneSettings
    from ..jobs.source import source_of_file

    ft = fleet.finetune
    settings = FinetuneSettings(steps=ft.steps, batch_size=ft.batch_size, lr=ft.lr, val_every=ft.val_every,
                                distill=ft.distill, teacher=fleet.base if ft.distill is not None else None)
    finetune(source_of_file(compact, fleet.config, fleet.data), compact, settings, tuned, force=True, device=device,
             show_progress=show_progress)
    source = source_of_file(tuned, fleet.config, fleet.data)
    baseline = fleet.base if fleet.base is not None else Path("base")  # an own model's: its YAML's base
    report = evaluate(source, tuned, EvaluateSettings(baseline=baseline), folder / "evaluation.json", force=True,
                      device=device, show_progress=show_progress)
    record = export(source, tuned, ExportSettings(format=format_of_runtime(dev.runtime).name, int8=dev.int8),
                    exported, force=True)
    return report, record


def _claim(out: Path, settings: dict[str, Any]) -> None:
    """A fleet folder belongs to one base model and one set of settings, so resumed rows stay comparable."""
    settings_path = out / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        raise TaskcutError(f"{out} holds a fleet run with other settings or another base model; use another --out")
    write_text(settings_path, json.dumps(settings, indent=2))


def _each_device(fleet: Fleet, out: Path, run: Callable[[Device, Path], dict[str, Any]],
                 settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every device whose row in fleet.csv is missing or was made otherwise; each finished device is
    written before the next starts. A row is reused only when its key (the device's settings, the
    fleet's bench settings, the base's and the scores' hashes) is unchanged; else it is recomputed."""
    old = {r["device"]: r for r in _read_rows(out / "fleet.csv")}
    rows: list[dict[str, Any]] = []
    for i, dev in enumerate(fleet.devices, 1):
        key = _device_key(dev, fleet, settings)
        previous = old.get(dev.name)
        if previous is not None and previous.get("key") == key:
            rows.append(previous)
            continue
        if previous is not None:
            console.print(f"fleet: {dev.name} changed since its row was written (its settings, the bench, the base "
                          "or the scores); recomputing it", highlight=False)
        console.print(f"fleet {i}/{len(fleet.devices)}: {dev.name}, {', '.join(dev.tasks)} within {dev.budget}",
                      highlight=False)
        rows.append({**run(dev, out / "devices" / dev.name), "key": key})
        later = [old[d.name] for d in fleet.devices[i:] if d.name in old]  # still to check: kept on a stop
        write_csv(out / "fleet.csv", rows + later)
    write_csv(out / "fleet.csv", rows)
    return rows


#: Which columns a row holds and how they are made: an older row (before transport and memory, before
#: memory was measured with a fixed mmap threshold, or before structured devices kept their runtime's
#: channel step) is computed again.
ROW_COLUMNS = 4


def _device_key(dev: Device, fleet: Fleet, settings: dict[str, Any]) -> str:
    """What made a device's row: a change in any of it makes the row stale."""
    what = {"device": dev.model_dump(mode="json"), "bench": fleet.bench.model_dump(mode="json"),
            "settings": settings, "columns": ROW_COLUMNS,
            # a structured device's widths follow its runtime's step on this machine (measured once, cached)
            "step": channel_step(dev.runtime, fleet.bench.threads, dev.int8) if dev.structured else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _bench(tuned: Path, exported: Path, fleet: Fleet, dev: Device, record: dict[str, Any]) -> dict[str, Any]:
    """MACs from the model file; latency and size from the exported file in the device's runtime; its
    download (`.tar.xz`, written beside it) and the peak memory the runtime adds to load it and run one
    input of the size it was exported for."""
    import torch

    from ..deploy.artifact import Deployment, peak_memory, write_transport
    from ..deploy.bench import count_macs, measure
    from ..deploy.export import baked
    from ..jobs.source import source_of_file
    from ..models import load

    size = tuple(fleet.bench.size)
    on_file = measure(exported, None, fleet.bench.threads, None, runs=fleet.bench.runs)
    macs = count_macs(baked(load(tuned)), torch.rand(1, 3, *size))
    if tuple(on_file["size"]) != size:  # the file runs the data's size; time it at the fleet's size
        # an own model's file is timed with its YAML: its input's channels, int8 calibrated on its train split
        own = source_of_file(tuned, fleet.config) if fleet.config is not None else None
        on_file = measure(tuned, on_file["runtime"], fleet.bench.threads, size, runs=fleet.bench.runs,
                          int8=bool(on_file.get("int8")), data=fleet.data, source=own)
    transport = write_transport(exported).stat().st_size
    memory = peak_memory(exported, Deployment(dev.runtime, dev.int8, fleet.bench.threads), [1, *record["input"]])
    return {**on_file, "macs": macs, "transport_bytes": transport, "memory_bytes": memory}


def _row(dev: Device, budget: dict[str, Any], vs_dense: float | None, vs_control: float | None, params: int,
         tuned: Path, bench: dict[str, Any], dense: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """One device's line of fleet.csv and fleet.html."""
    evaluation = record.get("evaluation") or {}
    return {
        "device": dev.name, "tasks": " ".join(dev.tasks), "budget": dev.budget, "structured": dev.structured,
        "reached": budget["reached"], "budget_ratio": budget["ratio"], "sparsity": budget["sparsity"],
        "delta_T_vs_dense": vs_dense, "delta_T_vs_control": vs_control, "params_nonzero": params,
        "file_bytes": tuned.stat().st_size, "macs": bench["macs"], "latency_ms": bench["latency_ms_median"],
        "latency_vs_dense": bench["latency_ms_median"] / dense["latency_ms_median"],
        "runtime": dev.runtime, "int8": dev.int8,
        "export_bytes": bench.get("export_bytes", bench["file_bytes"]), "transport_bytes": bench["transport_bytes"],
        "memory_bytes": bench["memory_bytes"],
        "export_max_abs_diff": max(r["max_abs_diff"] for r in record["check"].values()),
        "export_delta_T_vs_fp32": evaluation.get("delta_T"),
    }


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return read_csv(path, text=("device", "tasks", "budget", "runtime", "key"), booleans=("structured", "int8"))


def _plot(rows: list[dict[str, Any]]) -> str:
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "file_bytes", "file (MB)"), (axes[1], "latency_vs_dense", "latency / dense")):
        for r in rows:
            if r["delta_T_vs_dense"] is None:  # undefined (a baseline metric of 0): nothing to place
                continue
            x = r[key] / 1e6 if key == "file_bytes" else r[key]
            ax.scatter(x, r["delta_T_vs_dense"], marker="s" if r["structured"] else "o")
            ax.annotate(r["device"], (x, r["delta_T_vs_dense"]), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("delta_T vs dense (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("fleet: accuracy against size and latency (squares: structured)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _html(fleet: Fleet, rows: list[dict[str, Any]], dense: dict[str, Any], score_seconds: float | None) -> str:
    cols = ["device", "tasks", "budget", "reached", "budget_ratio", "sparsity", "delta_T_vs_dense",
            "delta_T_vs_control", "params_nonzero", "file_bytes", "export_bytes", "transport_bytes", "memory_bytes",
            "latency_ms", "latency_vs_dense"]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return html.escape(f"{v:,.4g}")
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    plot = _plot(rows) if rows else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>taskcut fleet</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>taskcut fleet</h1>
<p>Base {html.escape(str(fleet.base.name if fleet.base else fleet.config))}; data {html.escape(str(fleet.data or 'from the config'))}; every task scored once
({f"{score_seconds:.1f} s" if score_seconds is not None else "in an earlier run"}); fine-tuning {fleet.finetune.steps} steps per device{" with distillation from the dense model" if fleet.finetune.distill else ""}. delta_T on the test split against the
dense model on the same tasks and against the dense control (the same fine-tuning). Latency: ONNX Runtime,
{fleet.bench.threads} threads, 1x3x{fleet.bench.size[0]}x{fleet.bench.size[1]}, median of {fleet.bench.runs};
the dense five-task model: {dense['latency_ms_median']:.1f} ms.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<img alt="accuracy against size and latency" src="data:image/png;base64,{plot}">
</body></html>
"""
