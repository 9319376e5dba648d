"""ExecuTorch (.pte) with the XNNPACK backend; int8 by PT2E with XNNPACK's symmetric per-channel scheme.

`torch.export` specialises a batch-1 example to batch 1; exporting with a two-image example and
a named dynamic batch keeps the batch free. The runtime plans its memory for the largest batch
below the bound (15 images for a bound of 16 here), so the runner feeds larger batches in chunks.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

MAX_BATCH = 16


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ExecuTorch's runtime logs every load and thread-pool change to Python's stderr; keep the CLI's
    output (and its --json) to what taskcut says. Its errors still come back as exceptions."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield
CHUNK = 8


def exported(wrapper: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # contiguous: an example in channels-last memory would make the program expect that dim order
    two = (example[:1].expand(2, *example.shape[1:]) if len(example) < 2 else example[:2]).contiguous()
    with torch.no_grad():
        return torch.export.export(wrapper, (two,), dynamic_shapes=({0: batch},))


def write(wrapper: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None, path: Path,
          tasks: list[str]) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = exported(wrapper, example)
    if calibration is not None:
        program = exported(quantised(program, calibration), example)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(lowered.buffer)


def quantised(program: torch.export.ExportedProgram, calibration: torch.Tensor) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for i in range(0, len(calibration), 8):
            prepared(calibration[i:i + 8])
    return convert_pt2e(prepared)


def open_runner(path: Path, threads: int | None = None,
                tasks: list[str] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    with quiet():
        if threads:
            _unsafe_reset_threadpool(threads)  # XNNPACK's pool is process-wide
        method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(images: np.ndarray) -> list[np.ndarray]:
        with quiet():
            parts = [[o.numpy().copy() for o in method.execute([torch.from_numpy(np.ascontiguousarray(images[i:i + CHUNK]))])]
                     for i in range(0, len(images), CHUNK)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    return run
