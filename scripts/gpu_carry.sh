#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on a GPU machine that reaches nothing: the one small
# dependency qdq-onnx lacks there (onnx-graphsurgeon's wheel), MNIST as uint8 (compressed)
# and the trained MNIST CNN (scripts/train_mnist.py). Writes out/gpu_carry (about 15 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=out/gpu_carry
mkdir -p "$DEST/wheels"
"$PY" -m pip download --quiet --no-deps -c constraints.txt onnx-graphsurgeon -d "$DEST/wheels"
[ -f out/bench/mnist/fp32.onnx ] || "$PY" scripts/train_mnist.py --out out/bench/mnist --cosine
cp out/bench/mnist/fp32.onnx "$DEST/mnist_cnn.onnx"
"$PY" - <<'PYTHON'
import numpy as np
out = {}
for split in ("train", "test"):
    with np.load(f"out/bench/mnist/{split}.npz") as z:
        out[f"x_{split}"] = np.round(z["image"] * 255).astype(np.uint8)
        out[f"y_{split}"] = z["labels"].astype(np.uint8)
np.savez_compressed("out/gpu_carry/mnist.npz", **out)
PYTHON
du -sh "$DEST"
