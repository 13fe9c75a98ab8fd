"""Evaluating ONNX models (float or Q/DQ) in onnxruntime on labelled data."""

from __future__ import annotations

from typing import Any

import numpy as np


def onnx_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a single-input classifier (a path, bytes or onnx.ModelProto)."""
    from qdq_onnx.graph.sessions import inference_session, run_checked

    sess = inference_session(model)
    name = sess.get_inputs()[0].name
    hits = 0
    for i in range(0, len(x), batch_size):
        logits = run_checked(sess, None, {name: x[i:i + batch_size]})[0]
        hits += int(np.sum(np.argmax(logits, axis=-1) == y[i:i + batch_size]))
    return hits / len(x)


def sqnr_db(signal: float, noise: float) -> float:
    """Signal-to-quantization-noise ratio in dB from sums of squares."""
    if noise <= 0:
        return float("inf")
    if signal <= 0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def output_sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """SQNR of `output` against `reference` (e.g. a quantized model's logits vs float)."""
    ref = reference.astype(np.float64)
    return sqnr_db(float(np.sum(ref ** 2)), float(np.sum((output - ref) ** 2)))
