"""A transformer through the whole pipeline: a small ViT-style encoder (patch convolution,
learned positions, LayerNormalization, multi-head attention, exact-GELU MLP, residual Adds)
trained on MNIST, then convert -> insert -> calibrate -> fine-tune (QAT) -> emit, against
the float model trained for the same extra epoch (the control). Accuracy on the 10k test
set, every figure from ONNX files run in onnxruntime. Writes bench/results/transformer.json.

    .venv/bin/python scripts/bench_transformer.py [--epochs 2] [--qat-epochs 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from bench_common import write_result

OUT = Path("out/transformer")


def build(keras):
    keras.utils.set_random_seed(0)
    L = keras.layers

    class Position(L.Layer):
        """A learned position embedding added to the tokens (a constant Add in ONNX)."""

        def build(self, shape):
            self.table = self.add_weight(shape=tuple(shape[1:]), initializer="random_normal",
                                         name="table")

        def call(self, x):
            return x + self.table

    inp = keras.Input((28, 28, 1), name="image")
    x = L.Reshape((49, 32), name="tokens")(L.Conv2D(32, 4, strides=4, name="patch")(inp))
    x = Position(name="position")(x)
    for b in range(2):
        h = L.LayerNormalization(name=f"ln{b}a")(x)
        x = L.Add(name=f"res{b}a")([x, L.MultiHeadAttention(2, 16, name=f"mha{b}")(h, h)])
        h = L.LayerNormalization(name=f"ln{b}b")(x)
        h = L.Dense(64, activation="gelu", name=f"mlp{b}_up")(h)
        x = L.Add(name=f"res{b}b")([x, L.Dense(32, name=f"mlp{b}_down")(h)])
    x = L.GlobalAveragePooling1D(name="pool")(L.LayerNormalization(name="ln_out")(x))
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="vit_tiny")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6, help="float training epochs")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4, help="fine-tuning rate (QAT and control)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    import keras

    from qdq_onnx import pipeline, quantize_model
    from qdq_onnx.data.datasets import load_mnist
    from qdq_onnx.diagnostics.metrics import onnx_accuracy

    data = load_mnist()
    (x_tr, y_tr), (x_te, y_te) = data["train"], data["test"]
    OUT.mkdir(parents=True, exist_ok=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    t0 = time.perf_counter()
    model = build(keras)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    model.fit(x_tr, y_tr, batch_size=64, epochs=args.epochs, verbose=2)
    train_s = time.perf_counter() - t0
    weights = model.get_weights()
    fp32 = pipeline.convert(model)
    pipeline.save(fp32, OUT / "fp32.onnx", check="the float model")
    acc = {"fp32": onnx_accuracy(fp32, x_te, y_te)}
    t0 = time.perf_counter()
    q = quantize_model(fp32, calibration_data=x_tr[:512])
    acc["ptq"] = onnx_accuracy(q.onnx, x_te, y_te)
    steps = len(x_tr) // 64 * args.qat_epochs
    q.compile(learning_rate=args.lr, schedule="cosine")
    q.fit(x_tr, y_tr, batch_size=64, epochs=args.qat_epochs, verbose=0)
    q.save(OUT / "int8.onnx")
    qat_s = time.perf_counter() - t0
    acc["qat"] = onnx_accuracy(pipeline.load(OUT / "int8.onnx").model, x_te, y_te)
    # The control: the float model trained for the same extra epoch(s) and schedule.
    control = build(keras)
    control.set_weights(weights)
    sched = keras.optimizers.schedules.CosineDecay(args.lr, steps)
    control.compile(keras.optimizers.Adam(sched), loss)
    control.fit(x_tr, y_tr, batch_size=64, epochs=args.qat_epochs, verbose=0)
    acc["fp32_control"] = onnx_accuracy(pipeline.convert(control), x_te, y_te)
    lint = pipeline.lint(q.export()).summary()
    for k, v in acc.items():
        print(f"{k:13} {v * 100:6.2f}%  ({(v - acc['fp32']) * 100:+.2f} vs FP32)")
    print(f"QAT vs the float control: {(acc['qat'] - acc['fp32_control']) * 100:+.2f} points; "
          f"lint of the emitted model: {lint}")
    print(f"float training {train_s:.0f} s; insert+calibrate+QAT+emit {qat_s:.0f} s")
    out = write_result("transformer", {
        "model": "ViT-style encoder: 4x4 patch conv, learned positions, 2 blocks (LayerNorm, "
                 "2-head attention of head size 16, inside TensorRT's fused INT8 MHA "
                 "limits; exact-GELU MLP, residual Adds), LayerNorm, GAP, Dense",
        "float_epochs": args.epochs, "qat_epochs": args.qat_epochs, "lr": args.lr,
        "accuracy": acc, "lint": lint, "train_s": train_s, "quantize_and_qat_s": qat_s})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
