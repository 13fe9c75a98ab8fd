"""Room for onnxruntime's int32 bias in an FP16 remainder.

onnxruntime's WeightBiasQuantization (graph optimization level 1, ORT_ENABLE_BASIC, so on
by default; onnxruntime/core/optimizer/qdq_transformer/weight_bias_quantization.cc; in
1.32.0, not in 1.19.2) rewrites the float bias of a Conv or Gemm whose input 0 is
dequantized per tensor and whose output reaches a QuantizeLinear with nothing but
Relu/Clip between: it becomes DequantizeLinear(int32(Round(bias / (s_x * s_w))), s_x *
s_w), the product and the quotient computed in the bias's type. In FP16 a quotient above
65504 is Inf and a product below 2**-25 is 0, and the int32 made from either is garbage:
on the PP-OCRv4 text detector (paddle2onnx) 11 channels of 3 Convs (the stem's, |b| /
(s_x s_w) = 1.2e5, and dead channels, s_x s_w ~ 1e-9) thinned its text regions by 18% at
onnxruntime's default level while the file, run as written, matched the float model.
TensorRT adds the bias in float and never sees the problem.

Here each such channel's weight scale (shared by the weight's Q and DQ) is raised by the
smallest power of two that brings the FP16 quotient below 2**15 (the product rounded as
onnxruntime rounds it). Only those channels change: their weights get k bits coarser,
in channels whose output the bias dominates (it exceeds two full-scale INT8 products).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex, attribute

QUOTIENT_LIMIT = 2.0 ** 15  # half of FP16's largest finite value: room for the rounding
_OPS = (ops.CONV, ops.GEMM)  # ConvTranspose's per-channel axis (1) is not rewritten
_PASS = ("Relu", "Clip")


@dataclass
class Headroom:
    """The weight scales raised: per weight tensor, the channels and the power of two."""

    raised: dict[str, dict[int, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        if not self.raised:
            return []
        channels = sum(len(c) for c in self.raised.values())
        bits = max(k for c in self.raised.values() for k in c.values())
        names = ", ".join(list(self.raised)[:4]) + (", ..." if len(self.raised) > 4 else "")
        return [f"bias headroom: weight scales of {channels} channel(s) in "
                f"{len(self.raised)} layer(s) raised by up to 2**{bits} ({names}): "
                f"onnxruntime's default optimizations turn the bias into int32 in FP16, and "
                f"|bias| / (input scale x weight scale) would overflow FP16 there"]


def _reaches_q(index: GraphIndex, tensor: str) -> bool:
    """onnxruntime's test: a single path to a QuantizeLinear through Relu/Clip only."""
    for _ in range(8):
        users = index.consumers.get(tensor, [])
        if len(users) != 1:
            return False
        node = users[0].node
        if node.op_type == ops.QUANTIZE:
            return True
        if node.op_type not in _PASS or len(node.output) != 1:
            return False
        tensor = node.output[0]
    return False


def _f16_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b as onnxruntime computes an FP16 Mul on the CPU: in FP32, rounded to FP16."""
    with np.errstate(over="ignore", under="ignore"):
        return (a.astype(np.float32) * b.astype(np.float32)).astype(np.float16)


def _bits(bias: np.ndarray, weight_scale: np.ndarray, input_scale: np.ndarray
          ) -> np.ndarray:
    """Per channel, the power of two k >= 0 to raise the weight scale by: the smallest
    with FP16(input scale x FP16(weight scale x 2**k)) > 0 and |bias| / it <= the limit."""
    b = np.abs(bias.astype(np.float64))
    product = _f16_product(input_scale, weight_scale).astype(np.float64)
    need = np.zeros(b.shape, np.int64)
    # every channel of every biased layer is checked at once; only the few that fail step
    for c in np.flatnonzero((b > 0) & ((product == 0) | (b > QUOTIENT_LIMIT * product))):
        for k in range(1, 65):
            with np.errstate(over="ignore"):
                w = np.float16(np.float32(weight_scale[c]) * np.float32(2.0 ** k))
            raised = float(_f16_product(input_scale, np.asarray(w)))
            if raised > 0 and b[c] <= QUOTIENT_LIMIT * raised:
                need[c] = k
                break
    return need


def _expected(node: onnx.NodeProto) -> int:
    """The per-channel weight axis onnxruntime rewrites: 0 for Conv, Gemm's output axis."""
    return 0 if node.op_type == ops.CONV or attribute(node, "transB", 0) else 1


def _axis(index: GraphIndex, dq: onnx.NodeProto) -> int | None:
    axis = int(attribute(dq, "axis", 1))
    if axis >= 0:
        return axis
    weight = index.initializers.get(_source(index, dq.output[0]))
    return axis + len(weight.dims) if weight is not None else None


def _biased(index: GraphIndex, node: onnx.NodeProto, ranks: dict[str, int]
            ) -> tuple[str, str, int] | None:
    """(bias initializer, the tensor the path to a Q starts at, the per-channel weight axis
    onnxruntime expects) of a layer whose bias onnxruntime can rewrite: a Conv/Gemm's
    input 2, or a MatMul's Add of a 1-D constant (level 1's MatMulAddFusion makes the two a
    Gemm first; a MatMul on more than 2-D input gets Reshapes around it and no rewrite)."""
    if node.op_type in _OPS:
        slot = ops.BIAS_INPUT[node.op_type]
        if len(node.input) <= slot or node.input[slot] not in index.initializers:
            return None
        return node.input[slot], node.output[0], _expected(node)
    if node.op_type != ops.MATMUL:
        return None
    users = index.consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].node.op_type != "Add" or \
            ranks.get(_source(index, node.input[0]), 2) != 2:
        return None
    add = users[0].node
    other = add.input[1 - users[0].index]
    bias = index.initializers.get(other)
    if bias is None or len(bias.dims) != 1:
        return None
    return other, add.output[0], 1


def _ranks(graph: onnx.GraphProto) -> dict[str, int]:
    """The rank of every tensor the graph records a shape for."""
    return {v.name: len(v.type.tensor_type.shape.dim)
            for v in (*graph.value_info, *graph.input) if v.type.tensor_type.HasField("shape")}


def _source(index: GraphIndex, tensor: str) -> str:
    """The float tensor behind a Q -> DQ (or a DQ of stored values): whose shape is known."""
    dq = index.producer.get(tensor)
    if dq is None or dq.op_type != ops.DEQUANTIZE:
        return tensor
    q = index.producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == ops.QUANTIZE else dq.input[0]


def raise_bias_headroom(model: onnx.ModelProto) -> Headroom:
    """Raise, in place, the FP16 weight scales whose channels onnxruntime's int32 bias
    would overflow (see the module docstring)."""
    index = GraphIndex(model.graph)
    inits = index.initializers
    done, ranks = Headroom(), _ranks(model.graph)
    for node in index.nodes:
        found = _biased(index, node, ranks)
        if found is None:
            continue
        bias_name, tail, expected = found
        dq_x, dq_w = index.producer.get(node.input[0]), index.producer.get(node.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != ops.DEQUANTIZE \
                or dq_w.op_type != ops.DEQUANTIZE or not _reaches_q(index, tail):
            continue
        sx, sw, bias = inits.get(dq_x.input[1]), inits.get(dq_w.input[1]), inits[bias_name]
        if sx is None or sw is None or bias.data_type != onnx.TensorProto.FLOAT16 \
                or sw.data_type != onnx.TensorProto.FLOAT16:
            continue
        x_scale, w_scale = numpy_helper.to_array(sx), numpy_helper.to_array(sw)
        b = numpy_helper.to_array(bias).reshape(-1)
        if x_scale.size != 1 or w_scale.size not in (1, b.size) or \
                attribute(dq_w, "block_size", 0) or (w_scale.size > 1 and
                                                     _axis(index, dq_w) != expected):
            continue  # onnxruntime leaves these as they are
        need = _bits(b, np.broadcast_to(w_scale.reshape(-1), b.shape), x_scale.reshape(()))
        if not need.any():
            continue
        users = [u.node for u in index.consumers.get(sw.name, [])]
        if any(u.op_type not in ops.QDQ_OPS for u in users):
            continue  # the scale is read by something else: left as it is
        if w_scale.size == 1:
            need = np.full(1, int(need.max()))
        raised = (w_scale.reshape(-1).astype(np.float32) * np.exp2(need)).astype(np.float16)
        sw.CopyFrom(numpy_helper.from_array(raised.reshape(w_scale.shape), sw.name))
        tensor = dq_w.output[0].removesuffix("_dequantized")
        done.raised[tensor] = {int(c): int(need[c]) for c in np.flatnonzero(need)}
    return done


__all__ = ["QUOTIENT_LIMIT", "Headroom", "raise_bias_headroom"]
