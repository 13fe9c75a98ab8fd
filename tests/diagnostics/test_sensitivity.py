"""Layer sensitivity and --target-drop on a model where quantization hurts (4-bit weights)."""

import json

import numpy as np
import onnx
import pytest

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy
from qdq_onnx.placement.spec import load_spec_file


@pytest.fixture()
def files(digits, float_model, tmp_path):
    xtr, ytr, xte, yte = digits
    model = tmp_path / "fp32.onnx"
    onnx.save(float_model, model)
    np.savez(tmp_path / "val.npz", x=xte, labels=yte)
    np.savez(tmp_path / "calib.npz", x=xtr[:512])
    return model, tmp_path


def test_ranking_and_target_drop_spec_meets_the_target(digits, float_model, files, capsys):
    _, _, xte, yte = digits
    model, root = files
    spec = root / "spec.yaml"
    target = 1.0  # accuracy points
    assert main(["sensitivity", str(model), "--data", str(root / "val.npz"), "--calib",
                 str(root / "calib.npz"), "--weight-bits", "4", "--target-drop", str(target),
                 "--spec-out", str(spec), "--json", str(root / "s.json"), "--png",
                 str(root / "s.png")]) == 0
    report = json.loads((root / "s.json").read_text())
    fp32, full = report["float_metric"], report["quantized_metric"]
    assert fp32 - full > target / 100  # 4-bit PTQ misses the target as a whole
    rows = report["layers"]
    assert [r["recovery"] for r in rows] == sorted((r["recovery"] for r in rows), reverse=True)
    chosen = report["chosen_float"]
    assert 0 < len(chosen) < len(rows)
    # The spec, applied, keeps the drop under the target.
    user_spec, mode, _ = load_spec_file(spec)
    q = quantize_model(float_model, mode or "full", user_spec,
                       calibration_data=digits[0][:512], weight_bits=4)
    assert fp32 - accuracy(q.onnx, xte, yte) <= target / 100 + 1e-9
    assert (root / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_without_labels_ranks_by_output_sqnr(files, capsys):
    model, root = files
    np.savez(root / "nolabels.npz", x=np.load(root / "val.npz")["x"])
    assert main(["sensitivity", str(model), "--data", str(root / "nolabels.npz"),
                 "--json", str(root / "s2.json")]) == 0
    report = json.loads((root / "s2.json").read_text())
    assert report["metric"] == "sqnr_db" and np.isfinite(report["quantized_metric"])
    assert main(["sensitivity", str(model), "--data", str(root / "nolabels.npz"),
                 "--target-drop", "1", "--spec-out", str(root / "x.yaml")]) == 2
