"""What an unstructured device holds, side by side in one run: the deployed file and its download.

The shipped synth-tiny base model, tasks seg and depth, pruned with CUT (unstructured, 90% by
default, scored on 20 batches of 8 of the synth train split). For each runtime given: the file
the runtime loads (installed bytes) and the `.tar.xz` an update sends (transport bytes), fp32
and int8, for the dense model on the same tasks and for the pruned one, each as a ratio to the
dense fp32 file of that runtime (measured in the same run). Then each pruned file's metrics on
the test split in its runtime and delta_T against the same model in PyTorch fp32 (no
fine-tuning: it is the file's own loss that is measured). A runtime here runs the zeros of an
unstructured model as dense weights, so only the download can shrink with sparsity.

Run: python benchmarks/bench_deployed.py [--sparsity 0.9] [--runtimes onnxruntime,openvino]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--runtimes", default="onnxruntime,openvino")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from taskcut.cut.fuse import fuse
    from taskcut.cut.score import score
    from taskcut.cut.select import select
    from taskcut.compact.masking import apply_masks
    from taskcut.data.dataset import open_for_tasks
    from taskcut.deploy.artifact import Deployment, installed_bytes, transport_bytes, write_artifact
    from taskcut.deploy.export import export_module, training_images
    from taskcut.models import load
    from taskcut.workflows.demo import base_model

    tasks = ["seg", "depth"]
    base, data = base_model(show_progress=False)
    dense = select(load(base), tasks)
    specs = dense.tasks
    train = open_for_tasks(data, "train", specs)
    batches = [train.batch(torch.arange(i * 8, (i + 1) * 8)) for i in range(20)]
    sparse = select(load(base), tasks).model
    fusion = fuse(score(sparse, specs, batches), args.sparsity, "vote")
    apply_masks(sparse, fusion.masks)
    example = batches[0]["image"][:1]
    calibration = training_images(data, specs)
    test = open_for_tasks(data, "test", specs)
    print(f"synth-tiny {{seg, depth}}, CUT unstructured {fusion.sparsity:.3f}; ratios to the dense fp32 file of "
          "the same runtime")
    print(f"{'runtime':12s} {'model':10s} {'int8':5s} {'installed':>12s} {'x dense':>8s} {'download':>12s} "
          f"{'x dense':>8s}")
    for runtime in args.runtimes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            reference = None
            for name, model in (("dense", dense.model), ("CUT", sparse)):
                for int8 in (False, True):
                    folder = Path(tmp) / f"{name}-{int8}"
                    folder.mkdir()
                    path = write_artifact(model, example, Deployment(runtime, int8, 2, calibration), folder)
                    installed, download = installed_bytes(path), transport_bytes(path)
                    reference = reference or installed
                    print(f"{runtime:12s} {name:10s} {str(int8):5s} {installed:12,d} {installed / reference:8.3f} "
                          f"{download:12,d} {download / reference:8.3f}")
            for int8 in (False, True):
                from taskcut.deploy.formats import format_of_runtime

                out = Path(tmp) / f"eval-{int8}{format_of_runtime(runtime).suffix}"
                record = export_module(sparse, out, calibration[:4], format_of_runtime(runtime).name,
                                       calibration if int8 else None, specs, test)
                evaluation = record["evaluation"]
                print(f"  {runtime} CUT {'int8' if int8 else 'fp32'} in the runtime: delta_T vs the model in PyTorch "
                      f"fp32 {evaluation['delta_T']:+.2f}% on the test split ({len(test)} images)")


if __name__ == "__main__":
    main()
