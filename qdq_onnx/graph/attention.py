"""Attention in an ONNX graph: the two products around a Softmax (BMM1 = Q x K^T before it,
BMM2 = P x V after it), as tf2onnx, torch.onnx and paddle2onnx write them (MatMuls wrapped in
Reshape/Squeeze/Transpose, a scale and a mask between BMM1 and the Softmax). Placement (the
fused-MHA limits pattern) and lint (the MHA checks) find attentions with this one function."""

from __future__ import annotations

import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.qdq import dequantized

_SCORE_OPS = ops.AFFINE_OPS | {"Where"}  # the score scale and mask


def attention_products(index: GraphIndex, softmax: onnx.NodeProto) -> tuple | None:
    """(the MatMul of two activations before a Softmax, through scale/mask and shape ops with
    one live input, and the MatMul reading the Softmax output through shape ops and its Q/DQ
    pair), or None. tf2onnx turns Keras's attention einsums into MatMuls wrapped in
    Reshape/Squeeze/Transpose, which both walks pass through."""
    tensor, before = softmax.input[0], None
    for _ in range(8):
        found = dequantized(index, tensor)
        node = index.producer.get(found.source if found else tensor)
        if node is None:
            return None
        if node.op_type == ops.MATMUL:
            before = node
            break
        live = index.live_inputs(node)
        if node.op_type in ops.LAYOUT_OPS:  # data is input 0; a computed shape is not data
            tensor = node.input[0]
        elif node.op_type in _SCORE_OPS and len(live) == 1:
            tensor = node.input[live[0]]
        else:
            return None
    products, frontier = [], [softmax.output[0]]
    for _ in range(8):  # every reader, through shape ops and Q/DQ (a Shape reads no values)
        nxt = []
        for t in frontier:
            for use in index.consumers.get(t, ()):
                node = use.node
                if node.op_type == ops.MATMUL:
                    products.append(node)
                elif node.op_type in ops.LAYOUT_OPS | {ops.QUANTIZE, ops.DEQUANTIZE}:
                    nxt.append(node.output[0])
        frontier = nxt
    after = products[0] if len({p.name for p in products}) == 1 else None
    if before is None or after is None:
        return None
    return before, after
