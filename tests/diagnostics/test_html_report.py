"""The HTML report is one self-contained file with all its sections."""

import re

import numpy as np
import onnx
from helpers import RNG, G

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main


def test_report_sections_and_self_containment(tmp_path):
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    m = g.model([g.binary("Add", "add", a, g.conv("c1", a, 4))])
    data = RNG.normal(size=(8, 3, 8, 8)).astype(np.float32)
    model = tmp_path / "q.onnx"
    onnx.save(quantize_model(m, calibration_data=data).onnx, model)
    np.savez(tmp_path / "d.npz", x=data)
    sens = tmp_path / "s.json"
    sens.write_text('{"metric": "sqnr_db", "float_metric": 1e9, "quantized_metric": 30.0, '
                    '"layers": [{"layer": "c0", "placements": 2, "only_this_quantized": 40.0,'
                    ' "only_this_float": 33.0, "recovery": 3.0}], "chosen_float": null, '
                    '"chosen_metric": null, "target_drop": null}')
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "inference.json").write_text(
        '{"results": {"1": {"median_ms": {"fp32": 1.0, "int8": 0.5}, "int8_over_fp32": 0.5}}}')
    out = tmp_path / "r.html"
    assert main(["report", str(model), "-o", str(out), "--data", str(tmp_path / "d.npz"),
                 "--sensitivity", str(sens), "--bench-dir", str(bench)]) == 0
    text = out.read_text()
    for section in ("summary", "placement", "lint", "sqnr", "sensitivity", "results"):
        assert f"id='{section}'" in text, section
    assert "TRT-R001" in text and "weighted branch" in text  # the rule behind a decision
    assert "2 of 2 weighted layers INT8" in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)
