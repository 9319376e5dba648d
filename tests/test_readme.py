"""The README's "Your own model" example runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_own_model_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## Your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code.group(1), "README.md", "exec"), {"__name__": "readme_example"})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "compact.onnx").stat().st_size > 0
