"""Own models end to end through the public API: six architectures that are not in the zoo.

Each goes through `prune_model` (unstructured at 0.7, structured at 0.5), `finetune_model`,
`evaluate_model`, `export_model` (ONNX, parity within 1e-4) and a `save`/`load` round trip
that rebuilds it from its factory with identical outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

import taskcut
from taskcut import Task, TaskcutError
from taskcut.compact.masking import masks_of

from . import own_models

SEG = Task.segmentation(classes=6)


batches = own_models.batches


DETECTION = Task.custom(loss=own_models.detection_loss,
                        metrics={"objectness_acc": (own_models.objectness_accuracy, "higher"),
                                 "box_error": (own_models.box_error, "lower")})

#: name -> (factory reference, tasks, tasks to keep)
CASES: dict[str, tuple[str, dict, list[str]]] = {
    "fpn": ("fpn", {"seg": SEG, "depth": Task.depth(), "normal": Task.normal()}, ["seg", "depth"]),
    "vit": ("vit", {"seg": SEG, "scene": Task.classification(classes=7)}, ["seg", "scene"]),
    "sliced": ("sliced", {"seg": SEG, "depth": Task.depth()}, ["seg"]),
    "tagger": ("tagger", {"tags": Task.binary(labels=5), "depth": Task.depth()}, ["tags", "depth"]),
    "detector": ("detector", {"det": DETECTION, "seg": SEG}, ["det"]),
    "gated": ("gated", {"seg": SEG, "depth": Task.depth(), "normal": Task.normal()}, ["seg", "normal"]),
    "hf-vit": ("hf_vit", {"seg": SEG, "scene": Task.classification(classes=7)}, ["scene"]),
}


def _build(name: str):
    factory, tasks, keep = CASES[name]
    builder: Callable = getattr(own_models, factory)
    return builder().eval(), f"tests.own_models:{factory}", tasks, keep


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        out_a, out_b = a.eval()(x), b.eval()(x)
    return list(out_a) == list(out_b) and all(torch.equal(out_a[k], out_b[k]) for k in out_a)


@pytest.mark.parametrize("name", list(CASES))
def test_unstructured_pipeline(name: str, tmp_path: Path) -> None:
    model, factory, tasks, keep = _build(name)
    data = batches(list(tasks))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = taskcut.prune_model(model, tasks, data, keep=keep, sparsity=0.7)
    small = pruned.model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reference.items())  # the original is untouched
    x = data[0]["image"]
    with torch.no_grad():
        out = small(x)
        full = model(x)
    assert list(out) == keep
    masks = masks_of(small)
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert kept == pytest.approx(0.3, abs=2e-3)
    for task in keep:
        assert out[task].shape == full[task].shape
    assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in model.parameters())

    kept_tasks = {t: tasks[t] for t in keep}
    before = {n: m.clone() for n, m in masks.items()}
    taskcut.finetune_model(small, kept_tasks, data, steps=3, val_batches=data[:1], lr=1e-3)
    # the dense own model (computing more tasks) teaches the compact one; the original stays untouched
    taskcut.finetune_model(small, kept_tasks, data, steps=2, teacher=model, distill={"weight": 2.0})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reference.items())
    weights = dict(small.named_parameters())
    for n, m in before.items():  # pruned weights stay exactly zero
        module_name, _, attr = n.rpartition(".")
        w = getattr(small.get_submodule(module_name), attr)
        assert not bool(w[~m].any())
    del weights

    report = taskcut.evaluate_model(small, kept_tasks, data, baseline=model)
    assert set(report["metrics"]) == set(keep)
    assert set(report["baseline"]["metrics"]) == set(keep)

    parity = taskcut.export_model(small, tmp_path / "m.onnx", example_input=x)["check"]
    assert set(parity) == set(keep) and max(r["max_abs_diff"] for r in parity.values()) <= 1e-4
    path = taskcut.save(pruned, tmp_path / "m.safetensors", factory=factory)  # the record knows the selection
    again = taskcut.load(path, trust=[factory])  # the factory is the user's own
    assert _same_outputs(small, again, x)
    assert set(masks_of(again)) == set(masks_of(small))
    if keep != list(tasks):  # the module alone does not say which tasks were removed: refused, not written wrong
        with pytest.raises(TaskcutError, match="save the record"):
            taskcut.save(small, tmp_path / "bare.safetensors", factory=factory, tasks=kept_tasks)
        assert not (tmp_path / "bare.safetensors").exists()


@pytest.mark.parametrize("name", list(CASES))
def test_structured_pipeline(name: str, tmp_path: Path) -> None:
    model, factory, tasks, keep = _build(name)
    data = batches(list(tasks))
    pruned = taskcut.prune_model(model, tasks, data, keep=keep, sparsity=0.5, structured=True)
    small = pruned.model
    x = data[0]["image"]
    with torch.no_grad():
        out, full = small(x), model(x)
    assert list(out) == keep and all(out[t].shape == full[t].shape for t in keep)
    selected = taskcut.select(model, keep, x).model
    removed = 1 - sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in selected.parameters())
    assert removed > 0.2, removed
    kept_tasks = {t: tasks[t] for t in keep}
    taskcut.finetune_model(small, kept_tasks, data, steps=2)
    parity = taskcut.export_model(small, tmp_path / "s.onnx", example_input=x)["check"]
    assert max(r["max_abs_diff"] for r in parity.values()) <= 1e-4
    again = taskcut.load(taskcut.save(pruned, tmp_path / "s.safetensors", factory=factory), trust=[factory])
    assert _same_outputs(small, again, x)


def _query_bias(attention: torch.nn.Module) -> torch.Tensor:
    if isinstance(attention, torch.nn.MultiheadAttention):
        return attention.in_proj_bias[: attention.embed_dim]
    return attention.q_proj.bias


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention) or hasattr(m, "q_proj")]


@pytest.mark.parametrize("name", ["vit", "hf-vit"])
def test_structured_attention_keeps_the_head_layout(name: str, tmp_path: Path) -> None:
    """Whole dimensions are cut in every head alike: query channel h * head_dim + j survives for all h or none."""
    model, factory, tasks, keep = _build(name)
    attentions = _attention_modules(model)
    heads = [getattr(a, "num_heads", None) or a.num_attention_heads for a in attentions]
    with torch.no_grad():  # label every query channel by its index, to read off which ones survive
        for a in attentions:
            _query_bias(a).copy_(torch.arange(_query_bias(a).numel(), dtype=torch.float32))
    width = [_query_bias(a).numel() for a in attentions]
    data = batches(list(tasks))
    small = taskcut.prune_model(model, tasks, data, keep=keep, sparsity=0.5, structured=True).model
    prunable = [p for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d,
                                                              torch.nn.MultiheadAttention))
                for n, p in m.named_parameters(recurse=False) if p.dim() > 1]
    after = _attention_modules(small)
    cut = 0
    for a, h, w in zip(after, heads, width):
        kept = _query_bias(a).detach().round().long()
        head_dim = w // h
        per_head = {}
        for index in kept.tolist():
            per_head.setdefault(index // head_dim, set()).add(index % head_dim)
        assert len(set(map(frozenset, per_head.values()))) == 1, per_head  # the same dims in every head
        cut += w - kept.numel()
    assert cut > 0  # attention was pruned, not only left whole
    if name == "vit":
        before_n = sum(p.numel() for p in prunable)
        after_n = sum(p.numel() for m in small.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d,
                                                                            torch.nn.MultiheadAttention))
                      for n, p in m.named_parameters(recurse=False) if p.dim() > 1)
        assert 1 - after_n / before_n >= 0.4
    x = data[0]["image"]
    assert max(r["max_abs_diff"] for r in taskcut.export_model(small, tmp_path / "a.onnx", example_input=x)["check"].values()) <= 1e-4


def test_batches_from_a_generator_with_a_transform() -> None:
    """A one-shot source in the user's own layout: the first batch is not lost, every batch is transformed."""
    model, _, tasks, keep = _build("fpn")
    raw = batches(list(tasks))
    seen = []

    def transform(item: tuple) -> dict:
        seen.append(1)
        image, targets = item
        return {"image": image, **targets}

    source = ((b["image"], {t: b[t] for t in tasks}) for b in raw)  # tuples, not dicts
    small = taskcut.prune_model(model, tasks, source, keep=keep, sparsity=0.5, transform=transform).model
    assert list(small(raw[0]["image"])) == keep
    assert len(seen) == len(raw)  # each batch transformed once: the first one was not lost or done twice
