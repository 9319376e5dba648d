"""The prunability matrix as a README table: every encoder family of `tests/hf_encoders.py`.

Per family: parameters of the multi-task model, unstructured pruning ({seg, cls} at 0.7),
structured pruning (all tasks at 0.5: the parameter ratio reached against the selected model
without its dead parts, the seconds it took, how many channel groups were left whole and
why), ONNX export with parity (the exporter that succeeded), one fine-tuning step and a
save/load round trip. Each family runs in its own process, killed after 60 s.

    python benchmarks/encoder_matrix.py            # all families
    python benchmarks/encoder_matrix.py swin beit  # some
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def row(family: str) -> dict:
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    import torch

    import taskcut
    from taskcut.compact.structured import structured_prune
    from tests import hf_encoders
    from tests.test_encoder_matrix import FACTORY, TASKS

    model = hf_encoders.hf_encoder(family)
    data = hf_encoders.batches(family)
    x = data[0]["image"]
    out: dict = {"family": family, "params": sum(p.numel() for p in model.parameters())}
    tmp = Path(tempfile.mkdtemp())

    def step(name: str, fn) -> None:
        began = time.monotonic()
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 — a row records what failed, by type
            out[name] = f"{'' if isinstance(exc, taskcut.TaskcutError) else 'RAW '}{type(exc).__name__}: " \
                        f"{str(exc).splitlines()[0][:120] if str(exc) else ''}"
        out[f"{name}_s"] = round(time.monotonic() - began, 2)

    step("unstructured", lambda: bool(taskcut.prune_model(model, TASKS, data, keep=["seg", "cls"], sparsity=0.7)))
    compact: dict = {}

    def structured() -> float:
        selected = taskcut.select(model, list(TASKS), x)
        from taskcut.cut.score import score

        scores = score(selected.model, TASKS, data)
        result = structured_prune(selected.model, x[:1], scores, 0.5)
        compact["model"] = selected
        out["left_whole"] = result["left_whole"]
        return round(result["sparsity"], 3)

    step("structured", structured)
    if "model" in compact:
        small = compact["model"]
        step("onnx", lambda: max(r["max_abs_diff"] for r in
                                 taskcut.export_model(small, tmp / "s.onnx", example_input=x)["check"].values()))
        step("finetune", lambda: bool(taskcut.finetune_model(small, TASKS, data, steps=1)))

        def round_trip() -> bool:
            again = taskcut.load(taskcut.save(small, tmp / "s.safetensors", factory=FACTORY,
                                              kwargs={"family": family}), trust=[FACTORY])
            with torch.no_grad():
                a, b = small.model.eval()(x), again.eval()(x)
            return all(torch.allclose(a[t], b[t], rtol=0, atol=1e-6) for t in a)

        step("save_load", round_trip)
    return out


def main(families: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.hf_encoders import FAMILIES

    print("| family | params | unstructured 0.7 | structured 0.5 reached (s) | left whole | ONNX max diff | "
          "fine-tune | save/load |")
    print("|---|---|---|---|---|---|---|---|")
    for family in families or list(FAMILIES):
        began = time.monotonic()
        try:
            done = subprocess.run([sys.executable, __file__, "--row", family], capture_output=True, text=True,
                                  timeout=60, cwd=ROOT)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            r = json.loads(lines[-1]) if lines else {"family": family, "structured": done.stderr[-200:]}
        except subprocess.TimeoutExpired:
            r = {"family": family, "structured": "no answer in 60 s"}
        whole = r.get("left_whole", [])
        cells = [family, r.get("params", ""), _cell(r.get("unstructured")),
                 f"{_cell(r.get('structured'))} ({r.get('structured_s', '')} s)", len(whole),
                 f"{r['onnx']:.1e}" if isinstance(r.get("onnx"), float) else _cell(r.get("onnx")),
                 _cell(r.get("finetune")), _cell(r.get("save_load"))]
        print("| " + " | ".join(str(c) for c in cells) + f" |  <!-- {time.monotonic() - began:.0f} s -->")


def _cell(value: object) -> str:
    return "yes" if value is True else "-" if value is None else str(value)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--row"]:
        print(json.dumps(row(sys.argv[2]), default=str))
    else:
        main(sys.argv[1:])
