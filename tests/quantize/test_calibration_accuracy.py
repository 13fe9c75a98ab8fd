"""Every calibration method keeps the bundled MNIST CNN within 1 point of float (the model
`make demo` trains, here for one epoch; 10k test images)."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("mnist")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_no_method_drops_more_than_one_point_on_the_bundled_model(tmp_path):
    from qdq_onnx import pipeline, quantize_model
    from qdq_onnx.diagnostics.metrics import onnx_accuracy
    from qdq_onnx.quantize.calibration import METHODS

    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--epochs", "1",
                    "--out", str(tmp_path)], check=True, capture_output=True)
    model = pipeline.load(tmp_path / "fp32.onnx").model
    calib = np.load(tmp_path / "calib.npz")["image"]
    with np.load(tmp_path / "test.npz") as z:
        x, y = z["image"], z["labels"]
    fp32 = onnx_accuracy(model, x, y)
    assert fp32 > 0.95
    drops = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in METHODS:
            q = quantize_model(model, calibration_data=calib, calibration_method=method)
            drops[method] = fp32 - onnx_accuracy(q.onnx, x, y)
    assert all(drop <= 0.01 for drop in drops.values()), drops
