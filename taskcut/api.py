"""One call per job on any multi-task `nn.Module`: prune, fine-tune, evaluate, export.

The model is the user's: its forward returns `{task: tensor}`; `tasks` maps every output
name to a `Task` (its kind, loss and metrics); batches are any iterable of dict batches (a
`DataLoader` works) with the model input under `"image"` and each task's target under its
name, or any other shape with a `transform=` callable that turns a batch into that dict.
Every guess is checked on the first batch before any work: outputs against the declared
tasks, targets present, the model runs; what does not fit is a one-line `TaskcutError`.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from pydantic import ValidationError
from torch import nn

from .config import DistillConfig, TrainConfig
from .cut.decompose import evaluating, task_outputs
from .cut.budget import ON_ARTIFACT, parse_budget
from .cut.fuse import check_sparsity, parse_rule
from .cut.prune import PROVENANCE_ROOM, prune_scored
from .cut.score import prunable_parameters, score
from .cut.select import check_tasks, select
from .data.dataset import to_device
from .errors import TaskcutError
from .models.record import TaskModel, as_record, module_of
from .tasks import TaskSpec
from .tasks.dense import delta_fields

Transform = Callable[[Any], Mapping[str, torch.Tensor]]


class Batches:
    """A user's batches, re-iterable when their source is, moved to `device` and passed through `transform`."""

    def __init__(self, source: Iterable[Any], transform: Transform | None = None,
                 device: torch.device | str = "cpu", what: str = "batches") -> None:
        if source is None:
            raise TaskcutError(f"no {what} given")
        self.source, self.transform, self.device, self.what = source, transform, device, what
        self._first: tuple[Any, dict[str, torch.Tensor]] | None = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for raw in self.source:
            yield self._first[1] if self._first is not None and raw is self._first[0] else self._prepare(raw)

    def _prepare(self, raw: Any) -> dict[str, torch.Tensor]:
        batch = self.transform(raw) if self.transform is not None else raw
        if not isinstance(batch, Mapping):
            raise TaskcutError(f"a batch of the {self.what} is a {type(batch).__name__}, not a dict: give "
                               "transform= to turn it into {'image': input, task: target, ...}")
        return to_device(batch, self.device)

    def first(self) -> dict[str, torch.Tensor]:
        """The first batch. A one-shot iterator (a generator) is not lost for it: the batch taken
        is put back in front of the rest."""
        iterator = iter(self.source)
        try:
            raw = next(iterator)
        except StopIteration:
            raise TaskcutError(f"the {self.what} are empty") from None
        if iterator is self.source:
            self.source = itertools.chain([raw], iterator)
        self._first = (raw, self._prepare(raw))  # not transformed again when the pass reaches it
        return self._first[1]


class Rebatched:
    """A user's dict batches cut and joined into batches of `size` images (the last of a pass may be
    smaller), re-iterable when their source is: `--batch-size` for data whose factory made its own."""

    def __init__(self, batches: Iterable[Mapping[str, torch.Tensor]], size: int) -> None:
        from .settings import MAX_BATCH

        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH:
            raise TaskcutError(f"the batch size must be an integer from 1 to {MAX_BATCH}, got {size!r}")
        self.batches, self.size = batches, size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        held: dict[str, list[torch.Tensor]] = {}
        count = 0
        for batch in self.batches:
            values = dict(batch)
            sizes = {k: v.shape[0] if isinstance(v, torch.Tensor) and v.dim() else None for k, v in values.items()}
            if None in sizes.values() or len(set(sizes.values())) != 1:
                raise TaskcutError("re-batching needs every value of a batch to be a tensor with the same first "
                                   f"(batch) dimension; got {sizes}")
            for key, value in values.items():
                held.setdefault(key, []).append(value)
            count += next(iter(sizes.values()))
            while count >= self.size:
                joined = {k: torch.cat(v) for k, v in held.items()}
                yield {k: v[: self.size] for k, v in joined.items()}
                held = {k: [v[self.size:]] for k, v in joined.items()}
                count -= self.size
        if count:
            yield {k: torch.cat(v) for k, v in held.items()}


def named_tasks(tasks: Mapping[str, TaskSpec]) -> dict[str, TaskSpec]:
    """`{name: Task}` with each task carrying its name; anything else is a clear error."""
    if not isinstance(tasks, Mapping) or not tasks:
        raise TaskcutError("tasks must map every output name of the model to a taskcut.Task")
    out = {}
    for name, task in tasks.items():
        if not isinstance(task, TaskSpec):
            raise TaskcutError(f"task {name!r} is a {type(task).__name__}, not a taskcut.Task "
                               "(e.g. Task.segmentation(classes=19) or Task.custom(loss=...))")
        out[name] = dataclasses.replace(task, name=name)
    return out


def check_model(model: nn.Module, tasks: Mapping[str, TaskSpec], batch: Mapping[str, Any],
                needed: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run the model once on `batch`: its outputs must be the declared tasks and the batch must hold
    the input and the targets of `needed`; the outputs of that run are returned."""
    if "image" not in batch:
        raise TaskcutError(f"a batch has no 'image' (the model input); its keys are {sorted(batch)}")
    missing = [t for t in needed if t not in batch]
    if missing:
        raise TaskcutError(f"a batch has no target for task(s) {', '.join(missing)}; its keys are {sorted(batch)}")
    try:
        with torch.no_grad(), evaluating(model):
            raw = model(batch["image"])
    except Exception as exc:
        raise TaskcutError(f"{type(model).__name__} fails on a batch's 'image' ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    outputs = task_outputs(raw)
    if set(outputs) != set(tasks):
        raise TaskcutError(f"the model's outputs {sorted(outputs)} do not match the declared tasks {sorted(tasks)}")
    return outputs


def prune_model(model: nn.Module | TaskModel, tasks: Mapping[str, TaskSpec], batches: Iterable[Any], *,
                keep: Sequence[str],
                sparsity: float | None = None, structured: bool = False, rule: str = "vote",
                example_input: torch.Tensor | None = None, transform: Transform | None = None,
                device: torch.device | str = "cpu", max_batches: int | None = None, round_to: int | None = None,
                budget: str | None = None, scores: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                runtime: str | None = None, int8: bool = False, threads: int = 2,
                calibration: Iterable[Any] | None = None) -> TaskModel:
    """CUT on any model: a compact copy holding only the `keep` tasks, at `sparsity`, returned as a
    `TaskModel` record (`.model` the compact module, `.tasks` the kept tasks, `.budget` the budget
    report, `.left_whole` the layers structured pruning left whole; `save` and `export_model`
    take the record as it is). `model` is a module or a record (from `open_model`, say).

    Unstructured (default): `sparsity` is the zeroed fraction of conv/linear weights, held by
    masks. `structured`: the fraction of parameters removed with whole channels and heads (a
    smaller dense model; attention heads are kept consistent, layers that cannot be pruned
    safely are left whole). Layers of 4 x `round_to` channels or more keep a multiple of
    `round_to` (CPU kernels compute channels in blocks; 1 allows finer steps on small models);
    unset: with a budget measured in a runtime (`runtime`, or ONNX Runtime for a latency budget),
    the step that runtime runs convolutions in, measured on this machine once
    (`taskcut.deploy.widths.channel_step`); otherwise 8, and single channels where 8 cannot reach
    the sparsity, which is said). Scores come from
    `batches` (at most `max_batches`); the original model is left untouched. Instead of a
    sparsity, a `budget` ("params=1.5M", "params=0.3", "size=2MB", "transport=1MB", "memory=64MB",
    "macs=500M", "latency=20ms", see `taskcut.cut.budget`) asks for the least pruning whose result
    fits it; the report is the record's `budget`. With `runtime` (the device's: onnxruntime,
    executorch, litert, openvino), size, transport, memory and latency are measured on the file
    that runtime loads, run with `threads`, int8 with `int8` (calibrated on `calibration`, default
    the batches' images); without it, size is taskcut's own file and latency ONNX Runtime's fp32. `scores` from
    `taskcut.score` on the full model (every task once) skip scoring: a task's scores are the
    same on any selection. To save an own model, give the record its factory first
    (`record.replace(factory="pkg.mod:build", kwargs={...})`) or pass them to `save`.
    """
    named = named_tasks(tasks)
    if (sparsity is None) == (budget is None):
        raise TaskcutError("give either a sparsity or a budget")
    kind = parse_budget(str(budget)).kind if budget is not None else None
    if sparsity is not None:
        check_sparsity(sparsity)
    else:
        from .cut.budget import check_measurable

        check_measurable(kind, structured, runtime)
    if (runtime is not None or int8) and kind not in ON_ARTIFACT:
        raise TaskcutError("runtime= and int8= say where a size, transport, memory or latency budget is measured; "
                           "they do not apply " + ("with a sparsity" if budget is None else "to this budget"))
    if round_to is not None:
        from .settings import MAX_ROUND_TO

        if not structured:
            raise TaskcutError("round_to= is the channel step of structured pruning; it does not apply without "
                               "structured=True")
        if type(round_to) is not int or not 1 <= round_to <= MAX_ROUND_TO:
            raise TaskcutError(f"round_to must be an integer from 1 to {MAX_ROUND_TO}, got {round_to!r}")
    if int8 and runtime is None:
        raise TaskcutError("int8=True measures the budget on the runtime's int8 file: give runtime= too")
    if calibration is not None and not int8:
        raise TaskcutError("calibration= is what int8 is calibrated on; it does not apply without int8=True")
    data = Batches(batches, transform, device)
    first = data.first()
    kept = check_tasks(list(named), keep)
    check_model(module_of(model), named, first, kept)
    parse_rule(rule, len(kept))
    example = example_input if example_input is not None else first["image"]
    specs = {t: named[t] for t in kept}
    selected = select(model, kept, example.to(device)).replace(tasks=specs)
    small = selected.model
    if scores is not None:
        missing = [t for t in kept if t not in scores]
        if missing:
            raise TaskcutError(f"the scores given hold no task(s) {', '.join(missing)}")
        params = prunable_parameters(small)
        scores = {t: {n: s for n, s in scores[t].items() if n in params} for t in kept}
    else:
        source: Iterable[Mapping[str, torch.Tensor]] = data if max_batches is None else \
            itertools.islice(data, max_batches)
        scores = score(small, specs, source, device=device)
    deployment = None
    if runtime is not None or kind == "latency":
        from .deploy.artifact import Deployment

        images = None
        if int8:
            from .deploy.export import CALIBRATION_IMAGES

            taken = [b["image"].cpu() for b in itertools.islice(
                Batches(calibration, transform, what="calibration batches") if calibration is not None else data,
                CALIBRATION_IMAGES)]
            images = torch.cat(taken)[:CALIBRATION_IMAGES]
        deployment = Deployment(runtime or "onnxruntime", int8, threads, images)
    cut = prune_scored(small, scores, sparsity=sparsity, budget=budget, rule=rule, structured=structured,
                       example=example.to(device), file_bytes=lambda m: _file_bytes(selected.replace(model=m)),
                       deployment=deployment, round_to=round_to)
    if cut.left_whole:
        from .progress import console

        console.print(f"left whole (their channels cannot be cut safely): {', '.join(cut.left_whole)}",
                      highlight=False, soft_wrap=True)
    return selected.replace(model=cut.model, budget=cut.budget, left_whole=list(cut.left_whole))


def _file_bytes(record: TaskModel) -> int:
    """Bytes of the model file `save` writes with up to 2 KB of provenance, when the record knows its
    model's factory; else of its packed tensors."""
    import tempfile

    from .models import save
    from .models.io import packed_bytes

    if record.factory is None:
        return packed_bytes(record.model)
    with tempfile.TemporaryDirectory() as tmp:
        return save(record, Path(tmp) / "m.safetensors", PROVENANCE_ROOM).stat().st_size


def finetune_model(model: nn.Module | TaskModel, tasks: Mapping[str, TaskSpec], batches: Iterable[Any], *, steps: int,
                   val_batches: Iterable[Any] | None = None, lr: float = 5e-4, weights: Mapping[str, float] | None = None,
                   val_every: int = 50, seed: int = 0, transform: Transform | None = None,
                   device: torch.device | str = "cpu", show_progress: bool = False,
                   teacher: nn.Module | None = None,
                   distill: DistillConfig | Mapping[str, float] | None = None,
                   checkpoint: str | Path | None = None, checkpoint_every: int = 0,
                   resume: bool = False) -> nn.Module | TaskModel:
    """Fine-tune in place on the tasks' losses (weighted by `weights`, default 1); masks keep pruned
    weights at zero. With `val_batches`, the weights with the lowest validation loss are kept
    (never give the test split here); without, the last ones.

    With `teacher` (the dense model the compact one was pruned from; it may compute more
    tasks), each task also learns from the teacher's output: label loss + `distill["weight"]`
    x distillation loss (`taskcut.train.distill`; default weight 1, temperature 1).

    With `checkpoint` and `checkpoint_every`, the whole training state is written there every
    that many steps; `resume=True` continues from it and gives the uninterrupted run's weights
    when `batches` yields the same batches in the same order on every pass (a list, a data
    factory's split, a DataLoader without shuffling). Returns what it was given: the module, or the
    record with the tuned module."""
    from .train.distill import Teacher
    from .train.fit import IterableStream, fit

    if steps < 1:
        raise TaskcutError(f"steps must be at least 1, got {steps}")
    named = named_tasks(tasks)
    record, model = model, module_of(model)
    data = Batches(batches, transform, device)
    check_model(model, named, data.first(), list(named))
    val = Batches(val_batches, transform, device, "validation batches") if val_batches is not None else None
    if distill is not None and teacher is None:
        raise TaskcutError("distill settings need a teacher model (teacher=the dense model)")
    teacher = module_of(teacher) if teacher is not None else None
    if teacher is model:
        raise TaskcutError("the teacher must be the dense model, not the model being fine-tuned")
    settings = None
    if teacher is not None:
        try:
            settings = distill if isinstance(distill, DistillConfig) else DistillConfig(**dict(distill or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise TaskcutError(f"distill[{'.'.join(map(str, err['loc']))!r}]: {err['msg']}") from None
    cfg = TrainConfig(steps=steps, lr=lr, val_every=min(val_every, steps), seed=seed, batch_size=1,
                      distill=settings)
    taught = Teacher(teacher.to(device), settings, named) if teacher is not None and settings is not None else None
    result = fit(model, named, dict(weights or {}), cfg, IterableStream(data), val, device, show_progress,
                 label="finetune", teacher=taught, checkpoint=Path(checkpoint) if checkpoint is not None else None,
                 checkpoint_every=checkpoint_every, resume=resume)
    return record.replace(model=result.model) if isinstance(record, TaskModel) else result.model


def evaluate_model(model: nn.Module | TaskModel, tasks: Mapping[str, TaskSpec], batches: Iterable[Any], *,
                   baseline: nn.Module | TaskModel | None = None, transform: Transform | None = None,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Metrics per task over all `batches`, and with a `baseline` model its metrics and delta_T
    (the baseline may compute more tasks; only these are compared)."""
    named = named_tasks(tasks)
    model = module_of(model)
    data = Batches(batches, transform, device)
    check_model(model, named, data.first(), list(named))
    report: dict[str, Any] = {"metrics": _metrics(model, named, data, device)}
    if baseline is not None:
        base = _metrics(module_of(baseline), named, data, device)
        report["baseline"] = {"metrics": base}
        report["baseline"].update(delta_fields(report["metrics"], base, named))
    return report


def _metrics(model: nn.Module, tasks: Mapping[str, TaskSpec], data: Batches,
             device: torch.device | str) -> dict[str, dict[str, float]]:
    from .train.evaluate import evaluate_predictor

    with evaluating(model):
        return evaluate_predictor(lambda b: task_outputs(model(b["image"])), data, tasks, device=device)


def export_model(model: nn.Module | TaskModel, path: str | Path, *, example_input: torch.Tensor, format: str = "onnx",
                 int8: bool = False, calibration: Iterable[Any] | None = None, evaluate: Iterable[Any] | None = None,
                 transform: Transform | None = None, tasks: Mapping[str, TaskSpec] | None = None) -> dict[str, Any]:
    """Export for an edge runtime (`format`: onnx, executorch, litert, openvino, torchscript) with
    outputs named by task where the format allows it. The file is run in its runtime on
    `example_input` against eager PyTorch: fp32 must agree within 1e-4 or nothing is written.
    `int8` calibrates on up to 32 images of `calibration` (your training batches). With `evaluate`
    batches (and `tasks`, or a record's tasks), the file's metrics on them in its runtime and
    delta_T against the fp32 model in PyTorch are in the returned record, which is also written
    beside the file as FILE.taskcut.json."""
    from .deploy.export import CALIBRATION_IMAGES, export_module

    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise TaskcutError("example_input must be a batch of model inputs (a tensor)")
    if int8 and calibration is None:
        raise TaskcutError("int8 calibrates on training images: pass calibration= (batches of your train split)")
    record = as_record(model)
    model = record.model
    known = named_tasks(tasks) if tasks is not None else record.tasks
    images = None
    if int8:
        taken, count = [], 0
        for batch in Batches(calibration, transform, what="calibration batches"):
            taken.append(batch["image"].cpu())
            count += len(taken[-1])
            if count >= CALIBRATION_IMAGES:
                break
        images = torch.cat(taken)[:CALIBRATION_IMAGES]
    if evaluate is not None and not known:
        raise TaskcutError("evaluate= needs tasks= (their kinds say how each output is scored)")
    data = Batches(evaluate, transform, what="evaluation batches") if evaluate is not None else None
    return export_module(model.cpu(), Path(path), example_input.cpu(), format, images, known, data)
