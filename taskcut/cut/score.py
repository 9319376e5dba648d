"""CUT's importance: per selected task t, sum over batches of |w * dL_t/dw| for each prunable weight.

|w * dL_t/dw| is the magnitude of the gradient of L_t with respect to an all-ones mask on w
(SNIP's connection sensitivity, taken per task). One forward pass per batch serves every
selected task: each task's loss is back-propagated to the parameters it depends on only
(`backward(inputs=...)`), keeping the graph until the last task. Each weight's gradient is
folded into its score by a post-accumulate hook the moment it is ready and then freed. Unselected tasks cost
nothing. The model is in eval mode (running BatchNorm statistics, no dropout), so scores
are a deterministic function of the weights and the batches.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from .decompose import Decomposition, decompose_outputs, evaluating, task_outputs
from ..train.distributed import all_sum
from ..data.dataset import to_device
from ..errors import TaskcutError
from ..progress import progress_bar
from ..tasks.dense import TaskSpec

Scores = dict[str, dict[str, torch.Tensor]]
COMBINED = "combined"
Scope = Callable[[nn.Module, str], bool]


def conv_linear_weights(module: nn.Module, name: str) -> bool:
    """The default scope: weights of convolutions and linear layers (not biases, not norms)."""
    return name == "weight" and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def prunable_parameters(model: nn.Module, scope: Scope = conv_linear_weights) -> dict[str, nn.Parameter]:
    """Parameters in scope, by qualified name.

    A masked weight is found under its plain name (`conv.weight`) as the parametrization's
    leaf (`original`, zero where masked), so a masked model scores like its effective weights.
    """
    out: dict[str, nn.Parameter] = {}
    for mod_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if parametrize.is_parametrized(module):
            own.update({attr: plist.original for attr, plist in module.parametrizations.items()})
        for p_name, param in own.items():
            if scope(module, p_name):
                out[f"{mod_name}.{p_name}" if mod_name else p_name] = param
    return out


def score(model: nn.Module, tasks: Mapping[str, TaskSpec], batches: Iterable[Mapping[str, torch.Tensor]],
          decomposition: Decomposition | None = None, scope: Scope = conv_linear_weights,
          device: torch.device | str = "cpu", show_progress: bool = False, total: int | None = None,
          combined: Mapping[str, float] | None = None, float64: bool = False,
          task_names: Sequence[str] | None = None) -> Scores:
    """Per-task CUT scores `{task: {param name: tensor like the weight}}` for the selected `tasks`.

    Only weights that task t depends on get a score for t (from `decomposition`, read off the
    first batch's graph when not given). With `combined` (loss weights per task), there is
    one objective instead, the weighted sum of the task losses (SNIP on a multi-task model),
    scored over every weight some selected task uses: `{"combined": {...}}`.
    Scores are summed in float32, or with `float64` in float64 (twice the memory of the
    sums), which makes them independent of the order of the batches, so `prune` gives the
    same masks with and without torchrun (`reduce_scores`). `task_names` names the outputs of
    a model that returns a list/tuple. Gradients are on even under `torch.no_grad()`.
    """
    if not tasks:
        raise TaskcutError("score needs at least one selected task")
    params = prunable_parameters(model, scope)
    scores: Scores = {}
    targets: dict[str, list[str]] = {}
    current: list[str] = []
    names_by_id = {id(p): n for n, p in params.items()}

    def accumulate(param: torch.Tensor) -> None:
        # Runs as soon as a weight's gradient is ready; folding it into the score and
        # dropping it at once means the gradients of all weights never live together.
        acc = scores[current[0]].get(names_by_id[id(param)])
        if acc is not None and param.grad is not None:
            acc.add_((param.detach() * param.grad).abs_().to(acc.dtype))
        param.grad = None

    handles = []
    seen = 0
    with torch.enable_grad(), evaluating(model), progress_bar(show_progress) as bar:
        job = bar.add_task("score", total=total, info=", ".join(tasks))
        try:
            for batch in batches:
                batch = to_device(batch, device)
                outputs = task_outputs(model(batch["image"]), task_names)
                if not targets:
                    decomposition = decomposition or decompose_outputs(model, outputs)
                    targets = _task_params(decomposition, tasks, params)
                    if combined is not None:
                        targets = {COMBINED: list(dict.fromkeys(n for names in targets.values() for n in names))}
                    # float64 sums of float32 products are exact in practice, so the scores do not
                    # depend on the order of the batches (or on how torchrun shares them out)
                    dtype = torch.float64 if float64 else torch.float32
                    scores = {t: {n: torch.zeros_like(params[n], dtype=dtype) for n in names}
                              for t, names in targets.items()}
                    for p in params.values():
                        p.grad = None
                    handles = [params[n].register_post_accumulate_grad_hook(accumulate)
                               for n in dict.fromkeys(n for names in targets.values() for n in names)]
                names = list(targets)
                for i, key in enumerate(names):
                    current[:] = [key]
                    if key == COMBINED and combined is not None:
                        loss = sum(combined.get(t, 1.0) * spec.loss(outputs[t], batch[t]) for t, spec in tasks.items())
                    else:
                        loss = tasks[key].loss(outputs[key], batch[key])
                    loss.backward(inputs=[params[n] for n in targets[key]], retain_graph=i < len(names) - 1)
                seen += 1
                bar.update(job, advance=1)
        finally:
            for handle in handles:
                handle.remove()
    if seen == 0:
        raise TaskcutError("score got no batches")
    return scores


def reduce_scores(scores: Scores) -> Scores:
    """Sum each score over the torchrun ranks (each scored its share of the batches); float32 after."""
    for per_task in scores.values():
        for name, tensor in per_task.items():
            per_task[name] = all_sum(tensor).to(torch.float32)
    return scores


def _task_params(decomposition: Decomposition, tasks: Mapping[str, TaskSpec],
                 params: Mapping[str, nn.Parameter]) -> dict[str, list[str]]:
    missing = [t for t in tasks if t not in decomposition.tasks]
    if missing:
        raise TaskcutError(f"task(s) {', '.join(missing)} are not outputs of the model ({', '.join(decomposition.tasks)})")
    return {t: [n for n in decomposition.used_by(t) if n in params] for t in tasks}


def score_reference(model: nn.Module, tasks: Mapping[str, TaskSpec],
                    batches: Iterable[Mapping[str, torch.Tensor]], scope: Scope = conv_linear_weights,
                    device: torch.device | str = "cpu") -> Scores:
    """The published procedure: a full forward and backward per task per batch (for tests and benchmarks)."""
    params = prunable_parameters(model, scope)
    batches = list(batches)
    scores: Scores = {}
    with torch.enable_grad(), evaluating(model):
        for task, spec in tasks.items():
            acc = {n: torch.zeros_like(p) for n, p in params.items()}
            touched: set[str] = set()
            for batch in batches:
                batch = to_device(batch, device)
                model.zero_grad(set_to_none=True)
                spec.loss(task_outputs(model(batch["image"]))[task], batch[task]).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        acc[n] += (p.detach() * p.grad).abs()
                        touched.add(n)
            scores[task] = {n: acc[n] for n in params if n in touched}
        model.zero_grad(set_to_none=True)
    return scores
