"""A case where QAT matters: low-bit weights (4 or 3 bits; 8-bit activations) on the MNIST
CNN, where PTQ loses clearly (--weight-bits 8: the plain INT8 case). FP32, PTQ, QAT with
labels, QAT by self-distillation (no labels: KL to the FP32 model, T=2) and the float
control trained for the same extra epoch(s), every figure from ONNX files in onnxruntime on
the 10k test set; the recovered fraction is (QAT - PTQ) / (control - PTQ). Writes
bench/results/qat_<bits>bit_weights.json.

    .venv/bin/python scripts/bench_qat_low_bits.py [--weight-bits 4] [--epochs 1] [--lr 1e-4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from bench_common import write_result

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-bits", type=int, default=4)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from train_mnist import load_outputs

    from qdq_onnx import quantize_model
    from qdq_onnx.diagnostics.metrics import onnx_accuracy

    out = Path(args.out)
    files = load_outputs(out)
    (x, y), (xt, yt) = files["train"], files["test"]
    acc = {"fp32": onnx_accuracy(files["fp32"], xt, yt)}
    q = quantize_model(files["fp32"], calibration_data=files["calib"],
                       weight_scheme=f"int8-{args.weight_bits}bit")
    acc["ptq"] = onnx_accuracy(q.onnx, xt, yt)
    t = time.perf_counter()
    q.compile(learning_rate=args.lr, schedule="cosine")
    q.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    acc["qat"] = onnx_accuracy(q.export(), xt, yt)
    qat_s = time.perf_counter() - t
    # The same run without labels: self-distillation from the FP32 model (KL, T=2).
    q = quantize_model(files["fp32"], calibration_data=files["calib"],
                       weight_scheme=f"int8-{args.weight_bits}bit")
    t = time.perf_counter()
    q.compile(learning_rate=args.lr, schedule="cosine", distill=True, distill_loss="kl",
              temperature=2.0)
    q.fit(x, batch_size=64, epochs=args.epochs, verbose=0)
    acc["qat_distill"] = onnx_accuracy(q.export(), xt, yt)
    distill_s = time.perf_counter() - t
    np.savez(out / "qat_train.npz", image=x, labels=y)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "float_control.py"),
                    str(out / "mnist_cnn.keras"), "--data", str(out / "qat_train.npz"), "-o",
                    str(out / "control.onnx"), "--epochs", str(args.epochs), "--lr",
                    str(args.lr)], check=True, capture_output=True)
    from qdq_onnx import pipeline

    acc["fp32_control"] = onnx_accuracy(pipeline.load(out / "control.onnx").model, xt, yt)
    gap = max(acc["fp32_control"] - acc["ptq"], 1e-9)
    recovered = (acc["qat"] - acc["ptq"]) / gap
    recovered_distill = (acc["qat_distill"] - acc["ptq"]) / gap
    # what PTQ lost against the starting FP32 model, won back (distillation's ceiling is its
    # teacher, the starting model; label QAT also gains what the extra training gives)
    ptq_loss = acc["fp32"] - acc["ptq"]
    of_ptq_loss = {how: (acc[how] - acc["ptq"]) / ptq_loss if ptq_loss >= 1e-3 else None
                   for how in ("qat", "qat_distill")}  # undefined when PTQ loses nothing
    for k, v in acc.items():
        print(f"{k:13} {v * 100:6.2f}%  ({(v - acc['fp32']) * 100:+.2f} vs FP32)")
    print(f"{args.weight_bits}-bit weights: PTQ loses {(acc['fp32'] - acc['ptq']) * 100:.2f} "
          f"points; QAT ({args.epochs} epoch, {qat_s:.0f} s) recovers {recovered * 100:.0f}% of "
          "the gap to the float control (target >= 80%); by distillation, with no labels, "
          f"{recovered_distill * 100:.0f}% ({distill_s:.0f} s)")
    if of_ptq_loss["qat"] is not None:
        print(f"of the PTQ loss against the starting FP32: labels {of_ptq_loss['qat'] * 100:.0f}%"
              f", distillation {of_ptq_loss['qat_distill'] * 100:.0f}%")
    path = write_result(f"qat_{args.weight_bits}bit_weights", {
        "weight_bits": args.weight_bits, "epochs": args.epochs, "lr": args.lr, "accuracy": acc,
        "recovered_fraction_of_gap_to_control": recovered, "qat_seconds": qat_s,
        "distill_recovered_fraction_of_gap_to_control": recovered_distill,
        "distill_seconds": distill_s, "recovered_fraction_of_ptq_loss": of_ptq_loss})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
