"""Segmentation QAT benchmark: a small U-Net (Conv2DTranspose upsampling, skip Concats) on
MNIST digits pasted on 48x48 canvases, each pixel labelled background or its digit's class
(11 classes). Trained briefly in Keras, then FP32, PTQ (INT8 and 4-bit weights), QAT with
labels (per-pixel cross-entropy), QAT by self-distillation (no labels: KL to the float
model's softened logits) and the float control (the Keras model trained for the same extra
epochs with the same optimizer and schedule). Every figure is from ONNX files run in
onnxruntime on 2,000 held-out canvases: mean IoU over the 10 digit classes and pixel
accuracy. Writes bench/results/segmentation_qat.json.

    .venv/bin/python scripts/bench_segmentation.py [--train 12000] [--epochs 12]
        [--qat-epochs 1] [--lr 1e-4]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from bench_common import compile_cosine, qat_benchmark_args, write_result

ROOT = Path(__file__).resolve().parent.parent
SIZE, CLASSES = 48, 11


def canvases(images: np.ndarray, labels: np.ndarray, n: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """n canvases with two digits each at random places; mask: 0 background, 1 + digit."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, SIZE, SIZE, 1), np.float32)
    y = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        for _ in range(2):
            k = rng.integers(len(images))
            r, c = rng.integers(0, SIZE - 28, 2)
            digit = images[k, :, :, 0]
            x[i, r:r + 28, c:c + 28, 0] = np.maximum(x[i, r:r + 28, c:c + 28, 0], digit)
            y[i, r:r + 28, c:c + 28][digit > 0.3] = 1 + labels[k]
    return x, y


def unet(keras):
    """Three levels down (48 -> 6) and up again with Conv2DTranspose, skip Concats."""
    L = keras.layers
    i = keras.Input((SIZE, SIZE, 1), name="image")
    x, skips = i, []
    for level, width in enumerate((16, 32, 64)):
        x = L.Conv2D(width, 3, padding="same", activation="relu", name=f"enc{level}")(x)
        skips.append(x)
        x = L.MaxPooling2D(name=f"down{level}")(x)
    x = L.Conv2D(96, 3, padding="same", activation="relu", name="bottom")(x)
    for level, width in reversed(list(enumerate((16, 32, 64)))):
        x = L.Conv2DTranspose(width, 2, strides=2, name=f"up{level}")(x)
        x = L.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = L.Conv2D(width, 3, padding="same", activation="relu", name=f"dec{level}")(x)
    return keras.Model(i, L.Conv2D(CLASSES, 1, name="mask_logits")(x), name="unet")


def scores(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean IoU over the digit classes and pixel accuracy of an ONNX model."""
    from qdq_onnx.graph.sessions import inference_session

    sess = inference_session(model)
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 250]})[0].argmax(-1)
                           for i in range(0, len(x), 250)])
    ious = []
    for c in range(1, CLASSES):
        inter = np.sum((pred == c) & (y == c))
        union = np.sum((pred == c) | (y == c))
        if union:
            ious.append(inter / union)
    return {"miou": float(np.mean(ious)), "pixel_accuracy": float(np.mean(pred == y))}


def main() -> int:
    args = qat_benchmark_args(train=12000, epochs=12)
    import keras

    from qdq_onnx import pipeline, quantize_model
    from qdq_onnx.data.datasets import load_mnist

    data = load_mnist()
    x, y = canvases(*data["train"], args.train, seed=0)
    xt, yt = canvases(*data["test"], 2000, seed=1)
    keras.utils.set_random_seed(0)
    model = unet(keras)
    t = time.perf_counter()
    compile_cosine(keras, model, 3e-3, int(np.ceil(len(x) / 64)) * args.epochs)
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    float_s = time.perf_counter() - t
    fp32 = pipeline.convert(model)
    results = {"fp32": scores(fp32, xt, yt)}
    steps = int(np.ceil(len(x) / 64)) * args.qat_epochs
    for scheme in ("int8", "int8-4bit"):
        q = quantize_model(model, calibration_data=x[:512], weight_scheme=scheme)
        results[f"ptq_{scheme}"] = scores(q.onnx, xt, yt)
        for how in ("labels", "distill"):
            q = quantize_model(model, calibration_data=x[:512], weight_scheme=scheme)
            start = time.perf_counter()
            if how == "labels":
                q.compile(learning_rate=args.lr)
                q.fit(x, y, batch_size=64, epochs=args.qat_epochs, verbose=0)
            else:
                q.compile(distill=True, distill_loss="kl", temperature=2.0,
                          learning_rate=args.lr)
                q.fit(x, batch_size=64, epochs=args.qat_epochs, verbose=0)
            results[f"qat_{how}_{scheme}"] = {**scores(q.export(), xt, yt),
                                              "seconds": time.perf_counter() - start}
    control = keras.models.clone_model(model)
    control.set_weights(model.get_weights())
    keras.utils.set_random_seed(0)
    compile_cosine(keras, control, args.lr, steps)
    control.fit(x, y, batch_size=64, epochs=args.qat_epochs, verbose=0)
    results["fp32_control"] = scores(pipeline.convert(control), xt, yt)
    for k, v in results.items():
        print(f"{k:24} mIoU {v['miou'] * 100:6.2f}  pixel acc {v['pixel_accuracy'] * 100:6.2f}"
              + (f"  ({v['seconds']:.0f} s)" if "seconds" in v else ""))
    path = write_result("segmentation_qat", {
        "task": f"MNIST digits on {SIZE}x{SIZE} canvases, 2 per canvas, {CLASSES} classes",
        "train_canvases": args.train, "test_canvases": 2000, "float_epochs": args.epochs,
        "float_seconds": float_s, "qat_epochs": args.qat_epochs, "lr": args.lr,
        "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
