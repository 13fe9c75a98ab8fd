"""The README's getting-started code runs as written (so the docs cannot drift)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("mnist")

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.training
def test_getting_started_block_runs(tmp_path):
    text = README.read_text()
    code = re.search(r"## Getting started.*?```python\n(.*?)```", text, re.S).group(1)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "INT8 loss, accuracy:" in res.stdout
    out = tmp_path / "assets" / "toolkit_basics" / "example"
    assert (out / "fp32" / "original.onnx").stat().st_size > 0
    assert (out / "int8" / "quantized.onnx").stat().st_size > 0
