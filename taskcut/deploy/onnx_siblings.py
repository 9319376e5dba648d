"""Narrow sibling convolutions of an ONNX graph merged into one: the first layers of a multi-task model's heads.

Every task head of a multi-task model starts with convolutions that read the same feature map (the
trunk's output) with the same kernel, stride, padding and dilation. Structured pruning leaves
them narrow (16-48 channels), and a CPU runs a narrow convolution far below its MAC rate: ONNX
Runtime takes about 2x as long per output channel at 16 channels as at 64 or more
(`benchmarks/bench_latency_macs.py`). One convolution with the siblings' filters stacked, its
output split back into theirs, computes exactly the same numbers at the wide rate. Siblings at
`MERGE_BELOW` channels or wider are left alone: they already run at that rate, and merging them
measured slower (a dense five-head model, ONNX Runtime: 8.29 -> 8.66 ms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Convolutions with fewer output channels than this are merged with their siblings.
MERGE_BELOW = 64


def _attributes(node: Any) -> tuple:
    from onnx import helper

    return tuple(sorted((a.name, repr(helper.get_attribute_value(a))) for a in node.attribute))


def merge_siblings(model: Any) -> int:
    """Merge, in place, each set of two or more narrow float convolutions of `model`'s main graph that read
    one tensor with equal attributes (group 1) and own their initializer weights; a ReLU that is each
    sibling's only reader is merged along. Returns how many convolutions were merged."""
    from onnx import NodeProto, TensorProto, helper, numpy_helper

    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    names = [n.name for n in graph.node]
    if opset < 13 or len(set(names)) != len(names):  # Split takes its sizes as an input from opset 13
        return 0
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def owned(name: str) -> bool:
        tensor = inits.get(name)
        return (tensor is not None and tensor.data_type == TensorProto.FLOAT and len(readers.get(name, [])) == 1
                and tensor.data_location != TensorProto.EXTERNAL)

    sets: dict[tuple, list[Any]] = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if not owned(node.input[1]) or (bias is not None and not owned(bias)):
            continue
        if any(a.name == "group" and a.i != 1 for a in node.attribute) or node.output[0] in outputs:
            continue
        if len(inits[node.input[1]].dims) < 3 or inits[node.input[1]].dims[0] >= MERGE_BELOW:
            continue
        sets.setdefault((node.input[0], _attributes(node)), []).append(node)

    replaced: dict[str, list[Any]] = {}  # name of the first sibling -> the nodes that take the set's place
    dropped: set[str] = set()
    merged = 0
    for index, ((source, _), members) in enumerate(sets.items()):
        if len(members) < 2 or any(not m.name for m in members):
            continue
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m in members]
        biases = [numpy_helper.to_array(inits[m.input[2]]) if len(m.input) > 2 and m.input[2]
                  else np.zeros(w.shape[0], w.dtype) for m, w in zip(members, weights)]
        relus = [readers.get(m.output[0], []) for m in members]
        fuse_relu = all(len(r) == 1 and r[0].op_type == "Relu" and r[0].domain in ("", "ai.onnx") and r[0].name
                        and m.output[0] not in outputs for r, m in zip(relus, members))
        stem = f"taskcut_siblings_{index}"
        weight = numpy_helper.from_array(np.concatenate(weights), f"{stem}_weight")
        bias = numpy_helper.from_array(np.concatenate(biases), f"{stem}_bias")
        split = numpy_helper.from_array(np.array([w.shape[0] for w in weights], np.int64), f"{stem}_split")
        conv = helper.make_node("Conv", [source, weight.name, bias.name], [f"{stem}_out"], name=stem)
        conv.attribute.extend(members[0].attribute)
        nodes = [conv]
        ends = [r[0].output[0] for r in relus] if fuse_relu else [m.output[0] for m in members]
        wide = f"{stem}_out"
        if fuse_relu:
            nodes.append(helper.make_node("Relu", [wide], [f"{stem}_relu"], name=f"{stem}_relu"))
            wide = f"{stem}_relu"
            dropped.update(r[0].name for r in relus)
        nodes.append(helper.make_node("Split", [wide, split.name], ends, axis=1, name=f"{stem}_split"))
        graph.initializer.extend([weight, bias, split])
        for m in members:
            graph.initializer.remove(inits[m.input[1]])
            if len(m.input) > 2 and m.input[2]:
                graph.initializer.remove(inits[m.input[2]])
        dropped.update(m.name for m in members)
        replaced[members[0].name] = nodes
        merged += len(members)
    if not merged:
        return 0
    order: list[Any] = []
    for node in graph.node:  # the merged node stands where its first sibling stood: before every reader
        if node.name in replaced:
            order.extend(replaced[node.name])
        if node.name not in dropped:
            order.append(NodeProto.FromString(node.SerializeToString()))
    del graph.node[:]
    graph.node.extend(order)
    return merged


def merge_file(path: Path) -> int:
    """Merge the narrow sibling convolutions of the ONNX file at `path` (rewritten when any were)."""
    import onnx

    model = onnx.load(str(path))
    merged = merge_siblings(model)
    if merged:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return merged
