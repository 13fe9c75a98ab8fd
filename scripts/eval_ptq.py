"""PTQ accuracy table: FP32 vs INT8 Q/DQ (each calibration method) on a test set, evaluated
by running the ONNX files in onnxruntime. Defaults to the MNIST CNN of train_mnist.py.

    .venv/bin/python scripts/eval_ptq.py [--model out/mnist/fp32.onnx]
        [--calib out/mnist/calib.npz] [--test out/mnist/test.npz]

Writes bench/results/ptq_mnist.json and the Q/DQ models next to the float model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import write_result

from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="out/mnist/fp32.onnx")
    ap.add_argument("--calib", default="out/mnist/calib.npz")
    ap.add_argument("--test", default="out/mnist/test.npz")
    args = ap.parse_args()
    from qdq_onnx import quantize_model
    from qdq_onnx.files.onnx_files import load_model
    from qdq_onnx.quantize.calibration import METHODS

    model = load_model(args.model)
    with np.load(args.calib) as z:
        calib = z[z.files[0]]
    with np.load(args.test) as z:
        x, y = z["image"], z["labels"]
    rows = {"fp32": {"accuracy": accuracy(model, x, y)}}
    for method in METHODS:
        t = time.perf_counter()
        q = quantize_model(model, calibration_data=calib, calibration_method=method)
        elapsed = time.perf_counter() - t
        q.save(Path(args.model).with_name(f"ptq_{method}.onnx"))
        rows[method] = {"accuracy": accuracy(q.onnx, x, y), "quantize_s": elapsed}
    fp32 = rows["fp32"]["accuracy"]
    print(f"{'model':12} {'accuracy':>9} {'vs FP32':>9}")
    for name, r in rows.items():
        print(f"{name:12} {r['accuracy'] * 100:8.2f}% {(r['accuracy'] - fp32) * 100:+8.2f}")
    out = write_result("ptq_mnist", {"model": args.model, "test_samples": int(len(x)),
                                     "calibration_samples": int(len(calib)),
                                     "results": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
