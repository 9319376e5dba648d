"""Cut a selected, scored model: at a sparsity (masks, or whole channels with `structured`) or
within a budget (the least pruning that fits it). The one place both the command line's jobs
and `taskcut.prune_model` make the cut, so a model file and an own model are cut alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

from ..compact.masking import apply_masks, masks_of, unmask
from ..errors import TaskcutError
from .fuse import fuse

if TYPE_CHECKING:
    from ..deploy.artifact import Deployment

#: Room left in a measured file for the provenance the real one carries (how it was made, the budget report).
PROVENANCE_ROOM = {"room": "x" * 2048}


@dataclass
class Cut:
    """What a cut made: the model (the selected one, cut in place, or for a budget the chosen copy)
    and its figures."""

    model: nn.Module
    #: The sparsity asked for (with a budget: the one chosen) and the one reached (unstructured: of
    #: the prunable weights; structured: of the parameters).
    sparsity: float
    achieved: float
    keep_ratio: float = float("nan")
    #: Parameters of the selected model before the cut, and non-zero ones after it.
    params_before: int = 0
    params_after: int = 0
    #: name -> (elements before, fraction removed), per pruned layer.
    per_layer: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Structured: layers whose channels could not be cut safely, with the reason.
    left_whole: list[str] = field(default_factory=list)
    #: With a budget: the budget, the figure reached, the sparsity chosen (`prune_to_budget`).
    budget: dict[str, Any] | None = None
    #: Structured: wide layers kept a multiple of this many channels (1: single channels).
    round_to: int | None = None


def nonzero_parameters(model: nn.Module) -> int:
    """Parameters that are not masked to zero."""
    zeros = sum(int((~m).sum()) for m in masks_of(model).values())
    return sum(p.numel() for p in model.parameters()) - zeros


def prune_scored(small: nn.Module, scores: Mapping[str, Mapping[str, torch.Tensor]], *, sparsity: float | None,
                 budget: str | None, rule: str = "vote", structured: bool = False,
                 example: torch.Tensor | None = None, file_bytes: Callable[[nn.Module], float] | None = None,
                 deployment: Deployment | None = None, round_to: int | None = None,
                 structured_example: torch.Tensor | None = None) -> Cut:
    """Cut `small` (the selected model; it may carry masks, whose zeros stay zero) with its CUT
    `scores`. `example` is the input a budget is measured on; `structured_example` (default: its
    first item) the one structured pruning traces; `deployment` the device's runtime, where a
    budget's figure is measured on the runtime's file (see `prune_to_budget`)."""
    before = sum(p.numel() for p in small.parameters())
    if budget is not None:
        model, report = prune_to_budget(small, scores, budget, rule, structured, example, round_to, file_bytes,
                                        deployment=deployment)
        return Cut(model, report["sparsity"], report["sparsity"], params_before=before,
                   params_after=nonzero_parameters(model), budget=report, round_to=report.get("round_to"))
    assert sparsity is not None
    if structured:
        from ..compact.structured import check_reached, structured_prune

        if example is None and structured_example is None:
            raise TaskcutError("structured pruning needs an example input")
        shapes = {n: p.numel() for n, p in small.named_parameters()}
        traced = structured_example if structured_example is not None else example[:1]
        result = structured_prune(small, traced, scores, sparsity, rule, round_to)
        check_reached(result, sparsity)
        after = dict(small.named_parameters())
        return Cut(small, sparsity, result["sparsity"], params_before=result["parameters_before"],
                   params_after=nonzero_parameters(small), left_whole=list(result["left_whole"]),
                   round_to=result["round_to"],
                   per_layer={n: (size, 1.0 - after[n].numel() / size) for n, size in shapes.items()
                              if n in after and after[n].dim() > 1})
    existing = masks_of(small)  # a compact or imported pruned model: its zeros stay zero and count
    fusion = fuse(scores, sparsity, rule, fixed=existing)
    unmask(small)
    apply_masks(small, {**existing, **fusion.masks})
    return Cut(small, sparsity, fusion.sparsity, fusion.keep_ratio, params_before=before,
               params_after=nonzero_parameters(small),
               per_layer={n: (m.numel(), fusion.per_layer[n]) for n, m in fusion.masks.items()})


def channel_round(round_to: int | None, deployment: Deployment | None) -> int:
    """The channel step structured pruning keeps wide layers at: `round_to` when given; else the step the
    deployment's runtime runs convolutions in, measured on this machine (`taskcut.deploy.widths`); else 8."""
    from ..compact.structured import DEFAULT_ROUND_TO

    if round_to is not None:
        return round_to
    if deployment is None or deployment.runtime == "torch":
        return DEFAULT_ROUND_TO
    from ..deploy.widths import channel_step

    return channel_step(deployment.runtime, deployment.threads, deployment.int8)


def prune_to_budget(small: nn.Module, scores: Mapping[str, Mapping[str, torch.Tensor]], budget: str,
                    rule: str = "vote", structured: bool = False, example: torch.Tensor | None = None,
                    round_to: int | None = None, file_bytes: Callable[[nn.Module], float] | None = None,
                    deployment: Deployment | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The least-pruned copy of `small` that fits `budget` (see `taskcut.cut.budget`), and a report:
    the budget, the figure reached, the sparsity chosen and what the figure was measured on.
    `small` holds the selected tasks and may carry masks; `scores` are its CUT scores;
    `file_bytes` writes a model and measures the file (a `size` budget without a runtime: taskcut's
    own file). With a `deployment` (the device's runtime, int8 or not, threads), `size`,
    `transport`, `memory` and `latency` are measured on the file that runtime loads (int8 when
    the deployment is); a latency budget without one is timed in ONNX Runtime fp32 on 2 threads."""
    import copy
    import statistics

    from ..compact.structured import DEFAULT_ROUND_TO, structured_prune
    from .budget import BYTES, FLOOR, check_measurable, least_pruning, parse_budget
    from ..deploy.artifact import Deployment, measure_artifact
    from ..deploy.bench import count_macs, latencies
    from ..deploy.export import baked

    parsed = parse_budget(budget)
    check_measurable(parsed.kind, structured, deployment.runtime if deployment is not None else None)
    # the search measures what each sparsity gives, so no fallback to single channels is needed (their
    # ragged widths run slower, which a latency budget would pay for)
    round_to = channel_round(round_to, deployment) if structured else 1
    if (structured or deployment is not None) and example is None:
        raise TaskcutError("structured pruning or a runtime's figure needs an example input")
    timing = deployment or Deployment()
    total = sum(p.numel() for p in small.parameters())
    existing = masks_of(small)
    cache: dict[float, tuple[nn.Module, float]] = {}

    def pruned(s: float) -> nn.Module:
        trial = copy.deepcopy(small)
        if s == 0.0:
            return trial
        if structured:
            structured_prune(trial, example[:1], scores, s, rule, round_to)
        else:
            fusion = fuse(scores, s, rule, fixed=existing)
            unmask(trial)
            apply_masks(trial, {**existing, **fusion.masks})
        return trial

    def figure(model: nn.Module) -> float:
        if parsed.kind == "params":
            zeros = sum(int((~m).sum()) for m in masks_of(model).values())
            return float(sum(p.numel() for p in model.parameters()) - zeros)
        if parsed.kind in BYTES and deployment is not None:
            return measure_artifact(model, example[:1], deployment, parsed.kind)
        if parsed.kind == "size":
            if file_bytes is None:
                raise TaskcutError("a size budget needs a way to write the model (give file_bytes)")
            return float(file_bytes(model))
        if parsed.kind == "macs":
            return float(count_macs(model, example[:1]))
        image = example[:1].cpu()
        calibration = timing.calibration_for(image)
        return statistics.median(latencies(baked(model).cpu(), image, timing.runtime, timing.threads, warmup=3,
                                           runs=15, calibration=calibration)[0]) * 1e3

    # a fraction of the dense model on these tasks: of all its parameters, or of its measured figure,
    # which the search's first measurement (sparsity 0) then reuses instead of timing the dense model again
    target, dense = parsed.value, {}  # the dense model's figure: the same at every channel step
    if parsed.relative:
        if parsed.kind != "params":
            dense[0.0] = figure(pruned(0.0))
        target *= total if parsed.kind == "params" else dense[0.0]

    def measure(s: float) -> float:
        # only the least-pruned model within the budget so far is kept: the search's answer is always one
        model = pruned(s)
        value = dense[s] if s in dense else figure(model)
        if s == 0.0:
            dense[s] = value
        if value <= target and (not cache or s < min(cache)):
            cache.clear()
            cache[s] = (model, value)
        return value

    unit = " bytes" if parsed.kind in BYTES else " ms" if parsed.kind == "latency" else ""

    def search(step: int) -> tuple[float, float, nn.Module]:
        nonlocal round_to
        round_to = step
        cache.clear()
        sparsity, reached = least_pruning(measure, target, parsed.kind, 0.9 if structured else 0.999, unit)
        return sparsity, reached, cache[sparsity][0]

    sparsity, reached, model = search(round_to)
    note = None
    if structured and reached < FLOOR[parsed.kind] * target and round_to > DEFAULT_ROUND_TO:
        # a step wider than 8 (measured or given) moves a small model in steps too coarse for the budget's window:
        # multiples of 8, as before steps were measured, when they land nearer the budget
        first = (sparsity, reached, model, round_to)
        try:
            again = search(DEFAULT_ROUND_TO)
        except TaskcutError:
            again = None
        if again is not None and again[1] > reached:
            note = (f"at a channel step of {first[3]} the nearest model had {first[1] / target:.3f} x the budget; "
                    f"kept multiples of {DEFAULT_ROUND_TO} channels instead")
            sparsity, reached, model = again
        else:
            sparsity, reached, model, round_to = first
    report = {"budget": str(parsed), "kind": parsed.kind, "target": target, "reached": reached,
              "ratio": reached / target, "sparsity": sparsity, "floor": FLOOR[parsed.kind]}
    if structured:
        report["round_to"] = round_to
        if note:
            report["note"] = note
    if parsed.kind == "latency" or (parsed.kind in BYTES and deployment is not None):
        # what the figure was measured on: the runtime's file, int8 or fp32, the threads, the input
        report.update({"runtime": timing.runtime, "int8": timing.int8, "threads": timing.threads,
                       "input": list(example[:1].shape),
                       "measured_on": f"{MEASURED[parsed.kind]} of {timing.describe()}"})
    elif parsed.kind == "size":
        report["measured_on"] = "bytes of the taskcut model file (.safetensors, packed masks)"
    return model, report


#: What each figure measured on a runtime's file is.
MEASURED = {"size": "installed bytes", "transport": "bytes of the .tar.xz download", "latency": "median latency",
            "memory": "peak memory added to load and run one input"}
