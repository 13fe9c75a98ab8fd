"""Benchmark: the calibration methods (max, percentile, entropy, mse, auto) compared by
output SQNR against the float model on held-out inputs (and accuracy where there are
labels), on the MNIST CNNs of train_mnist.py, the pretrained MLPerf-Tiny ResNet-8 (on
smooth synthetic images) and a small ViT-style encoder (random weights, MNIST inputs).
Writes bench/results/calibration_methods.json.

    .venv/bin/python scripts/bench_calibration_methods.py [--mnist out/mnist out/mnist-gap-c4 ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from bench_common import CACHE, write_result

METHODS = ("max", "percentile", "entropy", "mse", "auto")


def vit_onnx() -> Path:
    """A small ViT-style encoder (patch conv, LayerNorm, MHA, ReLU MLP, residual Adds)."""
    path = CACHE / "vit_tiny.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    code = f"""
import keras
from qdq_onnx import pipeline
keras.utils.set_random_seed(0)
L = keras.layers
inp = keras.Input((28, 28, 1))
x = L.Reshape((49, 32))(L.Conv2D(32, 4, strides=4)(inp))
for i in range(2):
    h = L.LayerNormalization()(x)
    x = L.Add()([x, L.MultiHeadAttention(4, 8)(h, h)])
    h = L.LayerNormalization()(x)
    x = L.Add()([x, L.Dense(32)(L.Dense(64, activation="relu")(h))])
x = L.Dense(10)(L.GlobalAveragePooling1D()(L.LayerNormalization()(x)))
pipeline.save(pipeline.convert(keras.Model(inp, x)), {str(path)!r}, check="the model")
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def evaluate(model, calib, x, y=None) -> dict:
    from qdq_onnx import quantize_model
    from qdq_onnx.diagnostics.metrics import output_sqnr_db
    from qdq_onnx.graph.sessions import inference_session

    def outputs(m):
        sess = inference_session(m)
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: x[i:i + 100]})[0]
                               for i in range(0, len(x), 100)])

    reference = outputs(model)
    rows = {}
    for method in METHODS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = quantize_model(model, calibration_data=calib, calibration_method=method)
        out = outputs(q.onnx)
        rows[method] = {"output_sqnr_db": output_sqnr_db(reference, out)}
        if y is not None:
            rows[method]["accuracy"] = float(np.mean(np.argmax(out, -1) == y))
    if y is not None:
        rows["fp32"] = {"accuracy": float(np.mean(np.argmax(reference, -1) == y))}
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", nargs="*", default=["out/mnist", "out/mnist-gap-c4",
                                                   "out/mnist-bn-after-relu-c4"])
    ap.add_argument("--resnet8", default="out/demo/resnet8_fp32.onnx",
                    help="the pretrained MLPerf-Tiny ResNet-8 that `make demo` converts "
                         "(random-weight keras.applications models give degenerate outputs)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from qdq_onnx import pipeline

    results = {}
    rng = np.random.default_rng(0)
    for d in args.mnist:
        if not Path(d, "fp32.onnx").exists():
            print(f"skipping {d}: run scripts/train_mnist.py --out {d} first", file=sys.stderr)
            continue
        model = pipeline.load(Path(d, "fp32.onnx")).model
        calib = np.load(Path(d, "calib.npz"))["image"]
        with np.load(Path(d, "test.npz")) as z:
            x, y = z["image"][:2000], z["labels"][:2000]
        results[d] = evaluate(model, calib, x, y)
    if Path(args.resnet8).exists():
        coarse = rng.random((1256, 8, 8, 3), dtype=np.float32)  # smooth images in [0, 1]
        smooth = np.kron(coarse, np.ones((1, 4, 4, 1), np.float32))
        results["resnet8"] = evaluate(pipeline.load(args.resnet8).model, smooth[:256],
                                      smooth[256:])
    images = np.load(Path(args.mnist[0], "test.npz"))["image"] if args.mnist else \
        rng.random((600, 28, 28, 1), dtype=np.float32)
    vit = pipeline.load(vit_onnx()).model
    results["vit_tiny"] = evaluate(vit, images[:256], images[-500:])
    for name, rows in results.items():
        line = " | ".join(f"{m} {r['output_sqnr_db']:.2f} dB"
                          + (f" {r['accuracy'] * 100:.2f}%" if "accuracy" in r else "")
                          for m, r in rows.items() if m != "fp32")
        fp = f" (fp32 {rows['fp32']['accuracy'] * 100:.2f}%)" if "fp32" in rows else ""
        print(f"{name}{fp}: {line}")
    print(f"wrote {write_result('calibration_methods', {'results': results})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
