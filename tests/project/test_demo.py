"""`make demo` end to end (scripts/demo.py, with a shorter QAT epoch): every stage runs, the
table and the files it announces are there. Slow (it trains the float CNN first)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.training
def test_the_demo_runs_every_stage_and_writes_its_files(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out",
                          str(tmp_path), "--qat-samples", "2048"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    rows = dict(re.findall(r"^(FP32|PTQ INT8|QAT INT8|FP32 control \(\+1 epoch\))\s+"
                           r"(\d+\.\d+)%", out, re.M))
    assert set(rows) == {"FP32", "PTQ INT8", "QAT INT8", "FP32 control (+1 epoch)"}
    assert all(90.0 < float(v) <= 100.0 for v in rows.values()), rows
    counts = re.search(r"Q/DQ pairs: (\d+), quantized weights: (\d+), quantized activation "
                       r"inputs: (\d+)", out)
    assert counts and all(int(c) > 0 for c in counts.groups())
    for name in ("fp32.onnx", "qdq.onnx", "calibrated.onnx", "int8.onnx", "plan.json",
                 "demo.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    int8 = onnx.load(tmp_path / "int8.onnx")
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) == int(counts.group(1))
