"""Inference-mode BatchNormalization as a per-channel affine map (folding and freezing)."""

from __future__ import annotations

import numpy as np
import onnx

from qdq_onnx.graph.index import GraphIndex, attribute


def batchnorm_affine(index: GraphIndex, node: onnx.NodeProto
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift), float32 per channel, with BN(x) = x * scale + shift under the
    node's stored statistics; None when the statistics are not constants."""
    vals = [index.constant_value(t) for t in node.input[1:5]]
    if any(v is None for v in vals):
        return None
    gamma, beta, mean, var = (v.astype(np.float64).reshape(-1) for v in vals)
    c = gamma / np.sqrt(var + float(attribute(node, "epsilon", 1e-5)))
    return c.astype(np.float32), (beta - mean * c).astype(np.float32)
