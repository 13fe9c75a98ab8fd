"""Benchmark: one epoch of qdq-onnx QAT against (a) onnxruntime-training of the same float
graph without fake-quant and (b) QAT of the same Keras model in TensorFlow the way NVIDIA's
Keras toolkit does it (Conv2D/Dense wrapped so inputs and per-channel kernels pass through
tf.quantization.quantize_and_dequantize_v2 with the current batch's range). Same data,
batch size and epoch count, side by side in one run. Each measurement runs in a fresh
process holding only its own framework (TensorFlow's and onnxruntime's thread pools spin
and steal the 2 cores from each other when they share a process); sides alternate.

    .venv/bin/python scripts/bench_finetune.py [--samples 10000] [--batch-size 64 256]

Needs out/mnist from scripts/train_mnist.py. Writes bench/results/finetune.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench_common import write_result

ROOT = Path(__file__).resolve().parent.parent


def ort_runner(model, x, y, batch_size: int, lr: float):
    """A callable that trains one more epoch and returns its wall time."""
    from qdq_onnx import pipeline
    from qdq_onnx.pipeline.training import Training

    session = Training(model, pipeline.TrainConfig(learning_rate=lr))
    epoch = pipeline.FitConfig(batch_size=batch_size, verbose=0)
    session.fit(x[:batch_size * 4], y[:batch_size * 4], epoch)

    def run() -> float:
        t = time.perf_counter()
        session.fit(x, y, epoch)
        return time.perf_counter() - t

    return run


def tf_qat_model(keras_path: Path):
    """The original toolkit's recipe: wrap Conv2D/Dense with Q/DQ on inputs and kernels."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    def qdq_act(x):
        return tf.quantization.quantize_and_dequantize_v2(
            x, 0.0, 0.0, signed_input=True, num_bits=8, range_given=False, narrow_range=True)

    def qdq_kernel(k):
        zeros = tf.zeros([k.shape[-1]])
        return tf.quantization.quantize_and_dequantize_v2(
            k, zeros, zeros, signed_input=True, num_bits=8, range_given=False,
            narrow_range=True, axis=-1)

    class QConv2D(keras.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            return super().convolution_op(qdq_act(inputs), qdq_kernel(kernel))

    class QDense(keras.layers.Dense):
        def call(self, inputs, training=None):
            out = keras.ops.matmul(qdq_act(inputs), qdq_kernel(self.kernel))
            if self.use_bias:
                out = out + self.bias
            return self.activation(out) if self.activation is not None else out

    model = keras.models.load_model(keras_path, compile=False)

    def wrap(layer):
        kinds = {keras.layers.Conv2D: QConv2D, keras.layers.Dense: QDense}
        cls = kinds.get(type(layer))
        return cls.from_config(layer.get_config()) if cls else layer.__class__.from_config(
            layer.get_config())

    qmodel = keras.models.clone_model(model, clone_function=wrap)
    qmodel.set_weights(model.get_weights())
    return qmodel


def tf_runner(keras_path: Path, x, y, batch_size: int, lr: float):
    import keras

    model = tf_qat_model(keras_path)
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:batch_size * 4], y[:batch_size * 4], batch_size=batch_size, epochs=1,
              verbose=0)  # trace the train step outside the timed epochs

    def run() -> float:
        t = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
        return time.perf_counter() - t

    return run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side", choices=("qdq_onnx_qat", "ort_float", "tensorflow_qat"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default="out/mnist")
    args = ap.parse_args()
    from train_mnist import load_outputs

    from qdq_onnx import quantize_model

    out = Path(args.out)
    files = load_outputs(out, samples=args.samples)
    fp32, calib, (x, y) = files["fp32"], files["calib"], files["train"]
    if args.side:  # child process: one side, one batch size, print one epoch's time
        bs = args.batch_size[0]
        if args.side == "tensorflow_qat":
            run = tf_runner(out / "mnist_cnn.keras", x, y, bs, args.lr)
        else:
            model = fp32 if args.side == "ort_float" else quantize_model(
                fp32, calibration_data=calib).onnx
            run = ort_runner(model, x, y, bs, args.lr)
        print(f"EPOCH_SECONDS {run():.4f}")
        return 0
    import statistics
    import subprocess

    results = {}
    sides = ("qdq_onnx_qat", "ort_float", "tensorflow_qat")
    for bs in args.batch_size:
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.repeats):  # alternate, so drifts hit every side alike
            for side in sides:
                res = subprocess.run(
                    [sys.executable, __file__, "--side", side, "--batch-size", str(bs),
                     "--samples", str(args.samples), "--lr", str(args.lr), "--out",
                     str(out)], capture_output=True, text=True, check=True)
                line = [ln for ln in res.stdout.splitlines() if ln.startswith("EPOCH_SECONDS")]
                times[side].append(float(line[-1].split()[1]))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = {"qat_overhead_vs_ort_float": med["qdq_onnx_qat"] / med["ort_float"],
                  "tensorflow_over_qdq_onnx": med["tensorflow_qat"] / med["qdq_onnx_qat"]}
        results[str(bs)] = {"epoch_seconds_median": med, "epoch_seconds": times,
                            "ratios": ratios}
        for k, v in med.items():
            print(f"batch {bs:4d} {k:16} {v:7.2f} s per epoch ({args.samples} images)")
        print(f"batch {bs:4d} QAT / float onnxruntime-training: "
              f"{ratios['qat_overhead_vs_ort_float']:.2f}x (target <= 1.5x); TensorFlow QAT /"
              f" qdq-onnx QAT: {ratios['tensorflow_over_qdq_onnx']:.2f}x (target >= 1x)")
    write_result("finetune", {"samples": args.samples, "repeats": args.repeats,
                              "isolation": "one process per measurement", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
