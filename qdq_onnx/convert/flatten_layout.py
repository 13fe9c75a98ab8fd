"""Fold the NCHW->NHWC Transpose before a Flatten into the weights of the Dense that reads it.

A channels-last Keras CNN ends in Conv -> Flatten -> Dense. tf2onnx writes the Conv in NCHW
and puts a Transpose (perm 0,2,3,1) back to NHWC before the Flatten's Reshape, because the
Dense weights expect the features in (h, w, c) order. No layout pass can cancel that
Transpose (nothing after it is elementwise), and TensorRT runs it as a shuffle between the
Conv and the MatMul. Permuting the Dense weight's rows to (c, h, w) order computes the same
product from the NCHW tensor directly, so the Transpose goes away, exactly (each output is
the same sum of the same products, in another order).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.shapes import tensor_shapes

_TO_NHWC = [0, 2, 3, 1]


def _flattens(shape: np.ndarray, features: int) -> bool:
    """Whether a Reshape target keeps the batch and flattens the rest into `features`."""
    values = [int(v) for v in shape.ravel()]
    return len(values) == 2 and (values[1] == features and values[0] in (-1, 0)
                                 or values == [0, -1])


def _dense_weights(index: GraphIndex, tensor: str, features: int
                   ) -> list[onnx.TensorProto] | None:
    """The (features, N) weights of the MatMul/Gemm that are the only readers of `tensor`."""
    weights = []
    for use in index.consumers.get(tensor, ()):
        node = use.node
        if use.index != 0 or node.op_type not in (ops.MATMUL, ops.GEMM) or \
                (node.op_type == ops.GEMM and attribute(node, "transA", 0)):
            return None
        init = index.initializers.get(node.input[1])
        if init is None or len(index.consumers.get(init.name, ())) != 1:
            return None
        rows = init.dims[1] if node.op_type == ops.GEMM and attribute(node, "transB", 0) \
            else init.dims[0]
        if len(init.dims) != 2 or rows != features:
            return None
        weights.append((init, node.op_type == ops.GEMM and attribute(node, "transB", 0)))
    return weights or None


def fold_flatten_transposes(model: onnx.ModelProto) -> dict[str, None]:
    """Remove each Transpose(0,2,3,1) -> Flatten -> Dense pattern's Transpose from `model`
    (in place), permuting the Dense weights; the names of the removed nodes."""
    graph = model.graph
    index = GraphIndex(graph)
    candidates = [n for n in graph.node if n.op_type == "Transpose"
                  and list(attribute(n, "perm", [])) == _TO_NHWC
                  and len(index.consumers.get(n.output[0], ())) == 1
                  and index.consumers[n.output[0]][0].node.op_type == "Reshape"]
    if not candidates:
        return {}
    shapes = tensor_shapes(model, [n.input[0] for n in candidates])
    removed: dict[str, None] = {}
    for node in candidates:
        dims = shapes.get(node.input[0]) or []
        if len(dims) != 4 or any(d is None for d in dims[1:]):
            continue
        _, c, h, w = dims
        reshape = index.consumers[node.output[0]][0].node
        target = index.constant_value(reshape.input[1])
        if target is None or not _flattens(target, c * h * w):
            continue
        weights = _dense_weights(index, reshape.output[0], c * h * w)
        if weights is None:
            continue
        for init, transposed in weights:
            value = numpy_helper.to_array(init)
            value = value.T if transposed else value
            # rows in (h, w, c) order -> (c, h, w) order
            value = value.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
            init.CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(value.T if transposed else value), init.name))
        reshape.input[0] = node.input[0]
        removed[node.name] = None
    if removed:
        keep = [n for n in graph.node if n.name not in removed]
        del graph.node[:]
        graph.node.extend(keep)
    return removed
