"""Evaluating ONNX models (float or Q/DQ) in onnxruntime on labelled data."""

from __future__ import annotations

from typing import Any

import numpy as np


def onnx_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a single-input classifier (a path, bytes or onnx.ModelProto)."""
    from qdq_onnx.graph.sessions import inference_session

    sess = inference_session(model)
    name = sess.get_inputs()[0].name
    hits = 0
    for i in range(0, len(x), batch_size):
        logits = sess.run(None, {name: x[i:i + batch_size]})[0]
        hits += int(np.sum(np.argmax(logits, axis=-1) == y[i:i + batch_size]))
    return hits / len(x)
