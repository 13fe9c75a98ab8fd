"""A BERT-style text encoder (KerasHub BertBackbone built from a small config: 2 layers, 2
heads of 16, hidden 32, sequences up to 32 with a padding mask) with a classification head,
on a generated task with real structure: sentiment with negation (each word has a polarity,
a "not" token flips the next word's; the label is the sign of the sum), which needs each
word to attend to its neighbour and the sequence to be aggregated.
Trained briefly in Keras; then FP32, PTQ, QAT with labels, QAT by self-distillation and the
float control (the Keras model trained for the same extra epochs with the same optimizer and
schedule), every accuracy from ONNX files in onnxruntime on 4,000 held-out sequences. The
quantized file is linted with the TensorRT rules, multi-head-attention checks included.
Writes bench/results/bert_qat.json.

    .venv/bin/python scripts/bench_bert.py [--train 16000] [--epochs 20] [--qat-epochs 1]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from bench_common import compile_cosine, qat_benchmark_args, write_result

VOCAB, SEQ = 64, 32


NOT = 1  # flips the polarity of the word after it


def sequences(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Synthetic sentiment with negation: words 2..32 are positive, 33..63 negative, and
    the token 1 ("not") flips the word after it; label 1 when the polarities sum above 0
    (an odd number of words, so never a tie). Lengths vary (0 pads, with a padding mask)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, SEQ), np.int32)
    labels = np.zeros(n, np.int64)
    for i in range(n):
        words = 2 * rng.integers(3, 10) + 1
        tokens, total = [], 0
        for _ in range(words):
            negated = rng.random() < 0.3
            word = int(rng.integers(2, VOCAB))
            polarity = 1 if word <= 32 else -1
            tokens += [NOT, word] if negated else [word]
            total += -polarity if negated else polarity
        tokens = tokens[:SEQ]
        ids[i, :len(tokens)] = tokens
        labels[i] = int(total > 0)
    mask = (ids > 0).astype(np.int32)
    return ({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask},
            labels)


def classifier(keras, keras_hub):
    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2,
                                             hidden_dim=32, intermediate_dim=64, dropout=0.0,
                                             max_sequence_length=SEQ)
    inputs = {k: keras.Input((SEQ,), dtype="int32", name=k)
              for k in ("token_ids", "segment_ids", "padding_mask")}
    pooled = backbone(inputs)["pooled_output"]
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled), name="bert_cls")


def accuracy(model, x: dict[str, np.ndarray], y: np.ndarray) -> float:
    from qdq_onnx.pipeline.running import run_model

    return float(np.mean(np.argmax(run_model(model, x), -1) == y))


def main() -> int:
    args = qat_benchmark_args(train=16000, epochs=20)
    import keras
    import keras_hub

    from qdq_onnx import pipeline, quantize_model

    x, y = sequences(args.train, 0)
    xt, yt = sequences(4000, 1)
    keras.utils.set_random_seed(0)
    model = classifier(keras, keras_hub)
    t = time.perf_counter()
    compile_cosine(keras, model, 1e-3, int(np.ceil(args.train / 64)) * args.epochs)
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    float_s = time.perf_counter() - t
    acc = {"fp32": accuracy(pipeline.convert(model), xt, yt)}
    calib = {k: v[:512] for k, v in x.items()}
    q = quantize_model(model, calibration_data=calib)
    acc["ptq"] = accuracy(q.onnx, xt, yt)
    lint = pipeline.lint(q.onnx)
    mha = [f.id for f in lint.findings]
    seconds = {}
    for how in ("labels", "distill"):
        q = quantize_model(model, calibration_data=calib)
        start = time.perf_counter()
        if how == "labels":
            q.compile(learning_rate=args.lr)
            q.fit(x, y, batch_size=64, epochs=args.qat_epochs, verbose=0)
        else:
            q.compile(distill=True, distill_loss="kl", temperature=2.0, learning_rate=args.lr)
            q.fit(x, batch_size=64, epochs=args.qat_epochs, verbose=0)
        seconds[how] = time.perf_counter() - start
        emitted = q.export()
        acc[f"qat_{how}"] = accuracy(emitted, xt, yt)
        mha += [f.id for f in pipeline.lint(emitted).findings]
    control = keras.models.clone_model(model)
    control.set_weights(model.get_weights())
    keras.utils.set_random_seed(0)
    compile_cosine(keras, control, args.lr, int(np.ceil(args.train / 64)) * args.qat_epochs)
    control.fit(x, y, batch_size=64, epochs=args.qat_epochs, verbose=0)
    acc["fp32_control"] = accuracy(pipeline.convert(control), xt, yt)
    for k, v in acc.items():
        print(f"{k:13} {v * 100:6.2f}%")
    print(f"lint findings on the PTQ and QAT files (TensorRT rules, MHA checks included): "
          f"{mha or 'none'}")
    path = write_result("bert_qat", {
        "task": "synthetic sentiment with negation (7-19 words, 30% negated, padded to 32)",
        "model": "KerasHub BertBackbone(vocab 64, 2 layers, 2 heads x 16, hidden 32, "
                 "intermediate 64) + Dense(2) on pooled_output",
        "train": args.train, "test": 4000, "float_epochs": args.epochs,
        "float_seconds": float_s, "qat_epochs": args.qat_epochs, "lr": args.lr,
        "accuracy": acc, "qat_seconds": seconds, "lint_findings": mha})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
