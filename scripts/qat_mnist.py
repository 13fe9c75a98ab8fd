"""FP32 vs PTQ vs QAT on the MNIST CNN (scripts/train_mnist.py), all measured on the 10k test
set by running ONNX files in onnxruntime: the float model, the PTQ Q/DQ model (max
calibration on 512 images), the Q/DQ model emitted after QAT from the PTQ scales, and the
float control (the float model trained for the same extra epochs, same data and schedule).

    .venv/bin/python scripts/qat_mnist.py [--epochs 1] [--lr 1e-4] [--out out/mnist]

Writes OUT/qat.onnx and bench/results/qat_mnist.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_common import write_result

from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="out/mnist")
    args = ap.parse_args()
    from train_mnist import load_outputs

    from qdq_onnx import quantize_model
    from qdq_onnx.files.onnx_files import load_model

    out = Path(args.out)
    files = load_outputs(out)
    fp32, calib = files["fp32"], files["calib"]
    (x_train, y_train), (x_test, y_test) = files["train"], files["test"]
    q = quantize_model(fp32, calibration_data=calib)
    acc = {"fp32": accuracy(fp32, x_test, y_test), "ptq": accuracy(q.onnx, x_test, y_test)}
    q.compile(optimizer="adam", learning_rate=args.lr, schedule="cosine")
    t = time.perf_counter()
    history = q.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                    verbose=1)
    elapsed = time.perf_counter() - t
    q.save(out / "qat.onnx")
    acc["qat"] = accuracy(load_model(out / "qat.onnx"), x_test, y_test)
    import subprocess

    import numpy as np

    np.savez(out / "qat_train.npz", image=x_train, labels=y_train)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "float_control.py"),
                    str(out / "mnist_cnn.keras"), "--data", str(out / "qat_train.npz"), "-o",
                    str(out / "control.onnx"), "--epochs", str(args.epochs), "--lr",
                    str(args.lr), "--batch-size", str(args.batch_size)], check=True)
    acc["fp32_control"] = accuracy(load_model(out / "control.onnx"), x_test, y_test)
    for k, v in acc.items():
        print(f"{k:5} {v * 100:6.2f}%  ({(v - acc['fp32']) * 100:+.2f} vs FP32)")
    print(f"QAT: {args.epochs} epoch(s), {history.steps} steps, {elapsed:.0f} s")
    write_result("qat_mnist", {"accuracy": acc, "epochs": args.epochs, "lr": args.lr,
                               "batch_size": args.batch_size, "qat_seconds": elapsed,
                               "history": history.history})
    return 0


if __name__ == "__main__":
    sys.exit(main())
