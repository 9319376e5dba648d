"""Narrow sibling convolutions of an exported ONNX file run as one wide convolution, with the same outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from taskcut.deploy.formats import onnx as onnx_format
from taskcut.deploy.onnx_siblings import MERGE_BELOW, merge_file, merge_siblings


class _Heads(nn.Module):
    """A trunk read by three heads' first convolutions (two narrow 3x3 with ReLU, one narrow 1x1 without),
    a wide sibling, a grouped one, and a narrow conv with another dilation."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(3, 32, 3, padding=1)
        self.a = nn.Conv2d(32, 16, 3, padding=1)
        self.b = nn.Conv2d(32, 24, 3, padding=1)
        self.c = nn.Conv2d(32, 8, 1, bias=False)
        self.d = nn.Conv2d(32, 8, 1)
        self.wide = nn.Conv2d(32, MERGE_BELOW, 3, padding=1)
        self.wide2 = nn.Conv2d(32, MERGE_BELOW, 3, padding=1)
        self.grouped = nn.Conv2d(32, 16, 3, padding=1, groups=4)
        self.grouped2 = nn.Conv2d(32, 16, 3, padding=1, groups=4)
        self.dilated = nn.Conv2d(32, 16, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = torch.relu(self.trunk(x))
        a, b = torch.relu(self.a(t)), torch.relu(self.b(t))
        return (a.mean(1, keepdim=True) + b[:, :1], self.c(t) * 2 + self.d(t), self.wide(t) + self.wide2(t),
                self.grouped(t) - self.grouped2(t), self.dilated(t))


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_narrow_siblings_become_one_convolution_with_the_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Heads().eval()
    x = torch.rand(2, 3, 20, 20)
    path = tmp_path / "m.onnx"
    tasks = ["p", "q", "r", "s", "t"]
    onnx_format._export(module, x, path, tasks, {"image": {0: "batch"}})
    plain = onnx.load(str(path))
    merged = copy.deepcopy(plain)
    assert merge_siblings(merged) == 4  # a+b (with their ReLUs), c+d; not the wide, grouped or lone dilated ones
    onnx.checker.check_model(merged)
    convs = [n for n in merged.graph.node if n.op_type == "Conv"]
    assert len(convs) == len([n for n in plain.graph.node if n.op_type == "Conv"]) - 2
    assert sum(n.op_type == "Split" for n in merged.graph.node) == 2
    widths = sorted(int(i.dims[0]) for i in merged.graph.initializer if i.name.startswith("taskcut_siblings")
                    and i.name.endswith("_weight"))
    assert widths == [16, 40]
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    for got, plain_out, want in zip(_run(merged, x.numpy()), _run(plain, x.numpy()), expected):
        assert np.array_equal(got, plain_out) or np.abs(got - plain_out).max() <= 1e-5
        assert np.abs(got - want).max() <= 1e-4


def test_an_exported_fp32_file_holds_the_merged_convolution_an_int8_one_does_not(tmp_path: Path) -> None:
    """The writer every ONNX and OpenVINO export goes through merges fp32 files; int8 ones keep one activation
    scale per head."""
    torch.manual_seed(0)
    module = _Heads().eval()
    x = torch.rand(1, 3, 20, 20)
    for calibration in (None, torch.rand(4, 3, 20, 20)):
        path = tmp_path / f"m{calibration is None}.onnx"
        onnx_format.write(module, x, calibration, path, ["p", "q", "r", "s", "t"])
        names = [i.name for i in onnx.load(str(path)).graph.initializer]
        assert any(n.startswith("taskcut_siblings") for n in names) == (calibration is None)
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = module(x)
        tolerance = 1e-4 if calibration is None else 0.25
        assert all(np.abs(o - w.numpy()).max() <= tolerance * max(1.0, float(w.abs().max())) for o, w in zip(out, want))


def _graph(kernels: tuple[int, int], extra: list | None = None, weights_as_inputs: bool = False) -> onnx.ModelProto:
    """Two convolutions of one input with equal attributes (no kernel_shape: ONNX infers it from the weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.random((8, 4, k, k), dtype=np.float32), f"w{i}") for i, k in enumerate(kernels)]
    nodes = [helper.make_node("Conv", ["x", f"w{i}"], [f"y{i}"], name=f"c{i}", pads=[k // 2] * 4)
             for i, k in enumerate(kernels)]
    nodes.append(helper.make_node("Add", ["y0", "y1"], ["z"], name="add"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes + (extra or []), "g", inputs,
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_siblings_of_other_tools_graphs_are_merged_only_when_safe(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((1, 4, 8, 8), dtype=np.float32)
    same = _graph((3, 3))
    want = _run(same, x)[0]
    assert merge_siblings(same) == 2 and np.abs(_run(same, x)[0] - want).max() <= 1e-5
    assert merge_siblings(_graph((3, 1))) == 0  # equal attributes, other kernels: not siblings
    assert merge_siblings(_graph((3, 3), weights_as_inputs=True)) == 0  # weights a caller may feed
    from onnx import TensorProto, helper

    branch = helper.make_graph([helper.make_node("Identity", ["w0"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [8, 4, 3, 3])])
    flag = helper.make_node("Constant", [], ["flag"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True]))
    when = helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch, name="if")
    assert merge_siblings(_graph((3, 3), [flag, when])) == 0  # a subgraph may read a sibling's weight


def test_a_file_with_external_data_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_graph((3, 3)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    before = path.read_bytes(), (tmp_path / "m.onnx.data").read_bytes()
    assert merge_file(path) == 0
    assert (path.read_bytes(), (tmp_path / "m.onnx.data").read_bytes()) == before
