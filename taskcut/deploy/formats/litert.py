"""LiteRT (.tflite, TensorFlow Lite's successor), run by ai-edge-litert's interpreter with XNNPACK.

The file runs only the batch size it was exported with: the converter accepts a dynamic batch
but XNNPACK then fails to reshape the graph, so the batch is fixed at export (1, what a device
runs) and a batch of any other size is refused with a clear error. Outputs are named by task
(the converted module returns a dict). The int8 file takes int8 images: the runner quantises
them with the file's own scale and zero point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ...errors import TaskcutError


class _Named(nn.Module):
    """Outputs as a dict, so LiteRT names each output after its task."""

    def __init__(self, wrapper: nn.Module, tasks: list[str]) -> None:
        super().__init__()
        self.wrapper = wrapper
        self.tasks = tasks

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.tasks, self.wrapper(image)))


def write(wrapper: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None, path: Path,
          tasks: list[str]) -> None:
    import litert_torch

    named = _Named(wrapper, tasks).eval()
    one = example[:1]
    if calibration is None:
        model = litert_torch.convert(named, (one,))
    else:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        with torch.no_grad():
            prepared = prepare_pt2e(torch.export.export(named, (one,)).module(), quantizer)
            for i in range(len(calibration)):
                prepared(calibration[i:i + 1])
            model = litert_torch.convert(convert_pt2e(prepared, fold_quantize=False), (one,),
                                         quant_config=QuantConfig(pt2e_quantizer=quantizer))
    model.export(str(path))


def open_runner(path: Path, threads: int | None = None,
                tasks: list[str] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads or 1)
    signature = interpreter.get_signature_list()["serving_default"]
    runner = interpreter.get_signature_runner()
    detail = interpreter.get_input_details()[0]
    batch = int(detail["shape"][0])
    scale, zero = detail["quantization"]
    names = list(tasks) if tasks and set(tasks) <= set(signature["outputs"]) else signature["outputs"]

    def run(images: np.ndarray) -> list[np.ndarray]:
        if images.shape[0] != batch:
            raise TaskcutError(f"{path.name} is a LiteRT file for batches of {batch} (LiteRT's XNNPACK cannot "
                               f"resize the batch); got {images.shape[0]} images")
        if detail["dtype"] == np.int8:
            images = np.clip(np.round(images / scale) + zero, -128, 127).astype(np.int8)
        outputs = runner(**{signature["inputs"][0]: images})
        return [np.asarray(outputs[n], dtype=np.float32) for n in names]

    return run


def output_names(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return list(Interpreter(model_path=str(path)).get_signature_list()["serving_default"]["outputs"])
