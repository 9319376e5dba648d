"""The command line answers at once: building the app and parsing arguments import nothing heavy
(torch, numpy, the runtimes), which each command imports when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "numpy", "onnx", "onnxruntime", "openvino", "executorch", "safetensors", "matplotlib"]  # (typer itself imports pydantic for some options)


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_torch() -> None:
    assert _imported_after("import taskcut.cli") == []


def test_help_and_argument_errors_import_no_torch() -> None:
    for argv in (["--help"], ["prune", "--help"], ["fleet", "--help"], ["prune", "--bogus"]):
        code = (f"import sys; sys.argv = ['taskcut', *{argv!r}]\nimport taskcut.cli\n"
                "try:\n    taskcut.cli.app()\nexcept SystemExit:\n    pass")
        assert _imported_after(code) == [], argv


def test_import_taskcut_is_lazy_but_complete() -> None:
    assert _imported_after("import taskcut") == []
    loaded = _imported_after("from taskcut import prune_model, load, Task, trusting")
    assert "torch" in loaded


def test_every_public_name_resolves() -> None:
    import taskcut

    assert sorted(taskcut.__all__) == sorted([*taskcut._EXPORTS, "__version__"])
    for name in taskcut.__all__:
        assert getattr(taskcut, name) is not None
