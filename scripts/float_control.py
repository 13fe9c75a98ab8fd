"""The float control of a QAT run: the Keras model trained for the same extra epochs, on the
same data, with the same optimizer and schedule as the fine-tuning (Adam, cosine from LR),
then converted. A QAT result means something only next to this: its gain over the starting
model is mostly the extra training.

    .venv/bin/python scripts/float_control.py MODEL.keras --data TRAIN.npz -o CONTROL.onnx
        [--epochs 1] [--lr 1e-4] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help=".npz with 'image' and 'labels'")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from qdq_onnx import pipeline

    with np.load(args.data, allow_pickle=False) as z:
        x, y = z["image"], z["labels"]
    keras.utils.set_random_seed(0)
    model = keras.models.load_model(args.model, compile=False)
    steps = int(np.ceil(len(x) / args.batch_size)) * args.epochs
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    pipeline.save(pipeline.convert(model), args.output, check="the control model")
    print(f"wrote {args.output}: float control, {args.epochs} more epoch(s) from {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
