"""Narrow sibling convolutions of an ONNX graph merged into one: the first layers of a multi-task model's heads.

Every task head of a multi-task model starts with convolutions that read the same feature map (the
trunk's output) with the same kernel, stride, padding and dilation. Structured pruning leaves
them narrow (16-48 channels), and a CPU runs a narrow convolution far below its MAC rate: ONNX
Runtime takes about 2x as long per output channel at 16 channels as at 64 or more
(`benchmarks/bench_latency_macs.py`). One convolution with the siblings' filters stacked, its
output split back into theirs, computes the same outputs (up to float rounding, ~1e-6) at the wide
rate. Siblings at `MERGE_BELOW` channels or wider are left alone: they already run at that rate,
and merging them measured slower (a dense five-head model, ONNX Runtime: 8.29 -> 8.66 ms). Only
fp32 files are merged: an int8 file would give the merged output one activation scale for every
head, coarser for a head whose activations are much smaller than its siblings'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import console

#: Convolutions with fewer output channels than this are merged with their siblings.
MERGE_BELOW = 64


def _attributes(node: Any) -> tuple:
    from onnx import helper

    return tuple(sorted((a.name, repr(helper.get_attribute_value(a))) for a in node.attribute))


def _has_subgraph(graph: Any) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute)


def merge_siblings(model: Any) -> int:
    """Merge, in place, each set of two or more narrow float convolutions of `model`'s graph that read one
    tensor with equal attributes and weight shapes (group 1) and own their initializer weights; a ReLU
    that is each sibling's only reader is merged along. Returns how many convolutions were merged. A
    graph with subgraphs (If, Loop, Scan: their reads are not followed here) or external data is left
    as it is."""
    from onnx import NodeProto, TensorProto, helper, numpy_helper

    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13 or _has_subgraph(graph):  # Split takes its sizes as an input from opset 13
        return 0
    if any(t.data_location == TensorProto.EXTERNAL for t in graph.initializer):
        return 0
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input}

    def owned(name: str) -> bool:
        tensor = inits.get(name)
        return (tensor is not None and tensor.data_type == TensorProto.FLOAT and len(readers.get(name, [])) == 1
                and name not in inputs and name not in outputs)

    sets: dict[tuple, list[int]] = {}
    for index, node in enumerate(graph.node):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if not owned(node.input[1]) or (bias is not None and not owned(bias)):
            continue
        if any(a.name == "group" and a.i != 1 for a in node.attribute) or node.output[0] in outputs:
            continue
        dims = tuple(inits[node.input[1]].dims)
        if len(dims) < 3 or dims[0] >= MERGE_BELOW:
            continue
        sets.setdefault((node.input[0], _attributes(node), dims[1:]), []).append(index)

    nodes = list(graph.node)
    replaced: dict[int, list[Any]] = {}  # index of the first sibling -> the nodes that take the set's place
    dropped: set[int] = set()
    removed: set[str] = set()  # tensors no longer in the graph
    merged = 0
    for number, ((source, _, _), members) in enumerate(sets.items()):
        if len(members) < 2:
            continue
        convs = [nodes[i] for i in members]
        weights = [numpy_helper.to_array(inits[c.input[1]]) for c in convs]
        biases = [numpy_helper.to_array(inits[c.input[2]]) if len(c.input) > 2 and c.input[2]
                  else np.zeros(w.shape[0], w.dtype) for c, w in zip(convs, weights)]
        relus = [readers.get(c.output[0], []) for c in convs]
        fuse_relu = all(len(r) == 1 and nodes[r[0]].op_type == "Relu" and nodes[r[0]].domain in ("", "ai.onnx")
                        for r in relus)
        stem = f"taskcut_siblings_{number}"
        weight = numpy_helper.from_array(np.concatenate(weights), f"{stem}_weight")
        bias = numpy_helper.from_array(np.concatenate(biases), f"{stem}_bias")
        split = numpy_helper.from_array(np.array([w.shape[0] for w in weights], np.int64), f"{stem}_split")
        conv = helper.make_node("Conv", [source, weight.name, bias.name], [f"{stem}_out"], name=stem)
        conv.attribute.extend(convs[0].attribute)
        new = [conv]
        wide = f"{stem}_out"
        if fuse_relu:
            ends = [nodes[r[0]].output[0] for r in relus]
            new.append(helper.make_node("Relu", [wide], [f"{stem}_relu"], name=f"{stem}_relu"))
            wide = f"{stem}_relu"
            dropped.update(r[0] for r in relus)
            removed.update(c.output[0] for c in convs)
        else:
            ends = [c.output[0] for c in convs]
        new.append(helper.make_node("Split", [wide, split.name], ends, axis=1, name=f"{stem}_split"))
        graph.initializer.extend([weight, bias, split])
        for c in convs:
            for name in c.input[1:]:
                if name:
                    graph.initializer.remove(inits[name])
                    removed.add(name)
        dropped.update(members)
        replaced[members[0]] = new
        merged += len(members)
    if not merged:
        return 0
    order: list[Any] = []
    for index, node in enumerate(nodes):  # the merged node stands where its first sibling stood: before every reader
        order.extend(replaced.get(index, []))
        if index not in dropped:
            order.append(NodeProto.FromString(node.SerializeToString()))
    del graph.node[:]
    graph.node.extend(order)
    kept = [v for v in graph.value_info if v.name not in removed]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return merged


def merge_file(path: Path) -> int:
    """Merge the narrow sibling convolutions of the ONNX file at `path` (rewritten when any were). A file
    with external data is left as it is; so is one the merge fails on (said in one line): the merge
    only makes a file faster, so it never stops an export."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
            return 0
        merged = merge_siblings(model)
        if merged:
            onnx.checker.check_model(model)
            written = path.with_name(path.name + ".merged")
            try:
                onnx.save(model, str(written))
                os.replace(written, path)
            finally:
                written.unlink(missing_ok=True)
        return merged
    except Exception as exc:  # noqa: BLE001 — any failure keeps the unmerged file, which is correct
        console.print(f"kept {path.name} unmerged: merging its sibling convolutions failed "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})",
                      highlight=False)
        return 0
