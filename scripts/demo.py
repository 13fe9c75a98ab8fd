"""make demo: a small Keras CNN (BatchNorm, residual Add, pooling, Dense head) trained on
scikit-learn's digits, converted to ONNX, Q/DQ inserted by the TensorRT rules with max
calibration, and float vs INT8 (Q/DQ in onnxruntime) accuracy compared."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(os.environ.get("QDQ_DEMO_OUT", "out/demo"))


def digits_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def build_and_train(path: Path, train) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    y = keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inp, x, name="digits_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train[0], train[1], epochs=15, batch_size=32, verbose=0)
    model.save(path)


def accuracy(onnx_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from qdq_onnx.ort import inference_session

    sess = inference_session(str(onnx_path))
    name = sess.get_inputs()[0].name
    logits = sess.run(None, {name: x})[0]
    return float(np.mean(np.argmax(logits, axis=1) == y))


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", *args], check=True)
    return time.perf_counter() - t


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    train, test = digits_split()
    keras_path = OUT / "digits_cnn.keras"
    times = {}
    t = time.perf_counter()
    if not keras_path.exists():
        build_and_train(keras_path, train)
    times["train fp32 (Keras)"] = time.perf_counter() - t
    calib = OUT / "calib.npz"
    np.savez(calib, image=train[0][:512])
    fp32 = OUT / "fp32.onnx"
    qdq = OUT / "qdq.onnx"
    times["convert"] = cli("convert", str(keras_path), "-o", str(fp32))
    times["insert + calibrate"] = cli("insert", str(fp32), "-o", str(qdq), "--calib",
                                      str(calib), "--plan", str(OUT / "plan.json"))
    subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", "inspect", str(qdq)],
                   check=True)
    acc_fp32 = accuracy(fp32, *test)
    acc_int8 = accuracy(qdq, *test)
    print("\n== qdq-onnx demo (scikit-learn digits, 397 test images) ==")
    print(f"FP32 accuracy (ONNX, onnxruntime): {acc_fp32 * 100:.2f}%")
    print(f"INT8 PTQ accuracy (Q/DQ ONNX):     {acc_int8 * 100:.2f}%")
    for k, v in times.items():
        print(f"time {k:22}: {v:6.1f} s")
    print(f"outputs: {fp32}, {qdq}, {OUT / 'plan.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
