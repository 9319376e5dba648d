"""Could the installed file of an unstructured model shrink? ONNX sparse constants, measured.

No runtime here runs the zeros of an unstructured model sparsely, but ONNX can *store* a weight
as a sparse constant (`Constant` with `sparse_value`: the non-zeros and their 1-D int64 positions,
12 bytes a non-zero against 4 a weight; opset >= 13) which ONNX Runtime and OpenVINO's ONNX reader
turn dense when they load the file. This script takes the shipped synth-tiny base model on
{seg, depth}, pruned with CUT unstructured (90% by default, 20 scoring batches of 8, no
fine-tuning), exports it to ONNX fp32 the way taskcut does, rewrites every initializer for which
the sparse form is smaller, checks the file with `onnx.checker`, loads it in ONNX Runtime and in
OpenVINO (from the .onnx), compares their outputs with the dense-stored file's on test images,
and prints the sizes (installed and .tar.xz download) against the dense fp32 file of the dense
model, and both runtimes' latency for the two files side by side. Nothing in taskcut writes this
encoding yet: this is the measurement that says whether it should.

Run: python benchmarks/bench_sparse_onnx.py [--sparsity 0.9]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def sparse_constants(path: Path, out: Path) -> int:
    """Write `path` with every initializer whose sparse form is smaller as a sparse `Constant`; how many."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise SystemExit(f"opset {opset}: sparse constants need 13")
    graph = model.graph
    kept, nodes = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        flat = array.reshape(-1)
        where = np.flatnonzero(flat)
        if array.dtype != np.float32 or 12 * len(where) >= 4 * flat.size:
            kept.append(init)
            continue
        values = numpy_helper.from_array(flat[where].astype(np.float32), init.name)
        indices = numpy_helper.from_array(where.astype(np.int64), init.name + "_indices")
        sparse = helper.make_sparse_tensor(values, indices, list(array.shape))
        nodes.append(helper.make_node("Constant", [], [init.name], sparse_value=sparse, name=init.name + "_sparse"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return len(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    import onnxruntime as ort

    from taskcut.compact.masking import apply_masks
    from taskcut.cut.fuse import fuse
    from taskcut.cut.score import score
    from taskcut.cut.select import select
    from taskcut.data.dataset import open_for_tasks
    from taskcut.deploy.artifact import Deployment, transport_bytes, write_artifact
    from taskcut.deploy.export import baked
    from taskcut.models import load
    from taskcut.workflows.demo import base_model

    tasks = ["seg", "depth"]
    base, data = base_model(show_progress=False)
    dense = select(load(base), tasks).model
    specs = dense.config.task_specs()
    train = open_for_tasks(data, "train", specs)
    batches = [train.batch(torch.arange(i * 8, (i + 1) * 8)) for i in range(20)]
    pruned = select(load(base), tasks).model
    fusion = fuse(score(pruned, specs, batches), args.sparsity, "vote")
    apply_masks(pruned, fusion.masks)
    test = open_for_tasks(data, "test", specs).batch(torch.arange(16))["image"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {}
        for name, model in (("dense", dense), ("CUT", pruned)):
            folder = tmp / name
            folder.mkdir()
            files[name] = write_artifact(baked(model), test[:1], Deployment("onnxruntime"), folder, tasks)
        files["CUT, sparse constants"] = tmp / "sparse.onnx"
        rewritten = sparse_constants(files["CUT"], files["CUT, sparse constants"])
        reference = files["dense"].stat().st_size
        print(f"synth-tiny {{seg, depth}}, CUT unstructured {fusion.sparsity:.3f}, ONNX fp32; {rewritten} weights "
              "rewritten as sparse constants; x = ratio to the dense model's ONNX file")
        print(f"{'file':24s} {'installed':>11s} {'x':>6s} {'download':>11s} {'x':>6s}")
        for label, path in files.items():
            size, download = path.stat().st_size, transport_bytes(path)
            print(f"{label:24s} {size:>11,} {size / reference:>6.3f} {download:>11,} {download / reference:>6.3f}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sessions = {label: ort.InferenceSession(str(files[label]), options, providers=["CPUExecutionProvider"])
                    for label in ("CUT", "CUT, sparse constants")}
        feed = {"image": test.numpy()}
        a, b = (sessions[label].run(None, feed) for label in sessions)
        print(f"ONNX Runtime: loads the sparse-constant file; max |difference| of the outputs on 16 test images "
              f"{max(float(np.abs(x - y).max()) for x, y in zip(a, b)):.2e}")
        try:
            import openvino as ov

            core = ov.Core()
            compiled = {label: core.compile_model(str(files[label]), "CPU", {"INFERENCE_NUM_THREADS": 2})
                        for label in ("CUT", "CUT, sparse constants")}
            outs = [list(c(feed["image"]).values()) for c in compiled.values()]
            print(f"OpenVINO (from the .onnx): loads it; max |difference| "
                  f"{max(float(np.abs(x - y).max()) for x, y in zip(*outs)):.2e}")
        except Exception as exc:  # noqa: BLE001 - report what the runtime says, whatever it is
            compiled = {}
            print(f"OpenVINO (from the .onnx): does not load it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

        one = {"image": test[:1].numpy()}
        timings: dict[str, list[float]] = {}
        for _ in range(3):  # alternating, so a noisy moment hits both files
            for label, session in sessions.items():
                for _ in range(3):
                    session.run(None, one)
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    session.run(None, one)
                    times.append(time.perf_counter() - start)
                timings.setdefault(f"onnxruntime, {label}", []).append(statistics.median(times) * 1e3)
        for label, values in timings.items():
            print(f"latency 64x64, {label}: {statistics.median(values):.3f} ms")


if __name__ == "__main__":
    main()
