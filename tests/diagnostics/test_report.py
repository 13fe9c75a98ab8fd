"""inspect --data: per-tensor scale/clipping/SQNR and per-layer float-vs-Q/DQ divergence."""

import json

import numpy as np
import onnx
from helpers import RNG, G
from onnx import numpy_helper

from qdq_onnx import calibrate, quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.config import ReportConfig
from qdq_onnx.diagnostics.error_report import build_report


def _setup(tmp_path):
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 8))
    y = g.binary("Add", "add", a, g.conv("c1", a, 8))
    m = g.model([g.node("GlobalAveragePool", "gap", [y])])
    data = RNG.normal(size=(6, 3, 8, 8)).astype(np.float32)
    return m, data


def test_report_values_match_independent_computation(tmp_path):
    m, data = _setup(tmp_path)
    q = quantize_model(m, calibration_data=data, calibration_method="max")
    rep = build_report(q.onnx, data, ReportConfig(show_progress=False))
    rows = {r.tensor: r for r in rep.tensors}
    w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "c0_w"))
    s = np.abs(w).reshape(8, -1).max(axis=1) / 127
    wq = np.clip(np.rint(w / s[:, None, None, None]), -128, 127) * s[:, None, None, None]
    expect = 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / np.sum((w - wq) ** 2))
    assert abs(rows["c0_w"].sqnr_db - expect) < 1e-3
    assert rows["c0_w"].channels == 8 and rows["c0_w"].clipped == 0
    assert rows["x"].kind == "activation" and rows["x"].clipped == 0  # max calibration
    assert {r.node for r in rep.layers} == {"c0", "c1"}
    assert all(15 < r.sqnr_db < 80 for r in rep.layers)
    plain = rep.to_dict()  # what --json writes: the same rows as plain values
    assert [r["tensor"] for r in plain["tensors"]] == [r.tensor for r in rep.tensors]
    assert plain["layers"][0]["sqnr_db"] == rep.layers[0].sqnr_db


def test_clipping_shows_up_when_the_range_is_too_small(tmp_path):
    m, data = _setup(tmp_path)
    q = calibrate(quantize_model(m).onnx, data, method="percentile", percentile=90.0,
                  show_progress=False)
    report = build_report(q, data, ReportConfig(show_progress=False))
    rows = {r.tensor: r for r in report.tensors}
    assert 0.01 < rows["x"].clipped < 0.2


def test_inspect_with_data_writes_json_and_png(tmp_path, capsys):
    m, data = _setup(tmp_path)
    model = tmp_path / "q.onnx"
    onnx.save(quantize_model(m, calibration_data=data).onnx, model)
    d = tmp_path / "d.npz"
    np.savez(d, x=data)
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["inspect", str(model), "--data", str(d), "--json", str(js), "--png",
                 str(png)]) == 0
    out = capsys.readouterr().out
    assert "SQNR dB" in out and "c0_w" in out
    assert {"tensors", "layers"} == set(json.loads(js.read_text()))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
