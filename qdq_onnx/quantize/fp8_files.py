"""FP8 files that onnxruntime runs as written: three structures of a plain FP8 Q/DQ file that
onnxruntime's graph optimizations (on by default) turn into a wrong or unloadable model,
and what insertion writes instead. TensorRT reads the same file the same way either way.

1. Opset. onnxruntime's Q/DQ propagation copies a Q/DQ pair across a Reshape, Transpose,
   Squeeze, Unsqueeze, Slice or MaxPool next to it and then drops the DQ -> op -> Q around
   it, so the op runs on float8; onnxruntime 1.31 has FP8 kernels only for Reshape-21 and
   Transpose-21 (not -19), and refuses the model ("Failed to find kernel for Reshape(19)").
   FP8 files are written at opset 21, as NVIDIA Model Optimizer writes them.
2. Squeeze. The Squeeze after a global pooling has no FP8 kernel in onnxruntime 1.31 at any
   opset; a Squeeze that only drops the unit dimensions behind the batch is a Flatten
   (axis 1), which onnxruntime does not propagate Q/DQ across.
3. Bias headroom. onnxruntime's WeightBiasQuantization (level 1, ORT_ENABLE_BASIC) turns
   the float bias of a Conv/Gemm between a DQ input and a Q output into int32 with scale
   input_scale x weight_scale, dividing in the bias's type: with an FP16 remainder
   bias / (s_x s_w) overflows FP16 (65504) for FP8 scales (amax / 448, 12x smaller
   products than INT8's) and the int32 is garbage (an MNIST CNN: 98.9% -> 20-27%). FP8
   weight scales are raised by the smallest power of two that keeps the quotient below
   2**15. A power of two leaves every FP8 value of the weight the same (E4M3 rounding is
   scale-invariant by powers of two) except those pushed below 2**-6 into the subnormals:
   weights smaller than amax x 2**(k - 6) / 448. (onnxruntime 1.32 runs 1 and 2 either way;
   3 is in both.)

Not written around, only reported (`relu_fusion_hazards`): onnxruntime's CPU
ReluQuantFusion (ORT_ENABLE_EXTENDED, so its default level) removes a Relu whose only
consumer is a QuantizeLinear unless the zero point is INT8 other than -128 or UINT8 other
than 0: any other zero-point type, float8 included, passes the check
(onnxruntime/core/optimizer/qdq_transformer/relu_quantizelinear.cc, 1.19.2 to 1.32.0), so
negative values reach the FP8 pair. With the FP16 remainder (the default) the Relu runs in
FP16 and the fusion leaves it; with an FP32 remainder it does not. Measured on Relu -> FP8
Q -> DQ: [-1, -0.5, 0.5, 1] gives [0, 0, 0.48, 0.96] unoptimized and [-0.96, -0.48, 0.48,
0.96] at ORT_ENABLE_EXTENDED in both versions. The file is right; the fix would change its
structure for TensorRT (Q with `output_dtype` and no zero point), so it is not made.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex

FP8_OPSET = 21
BIAS_QUOTIENT_LIMIT = 2.0 ** 15  # half of FP16's largest finite value
MAX_HEADROOM_BITS = 6  # a weight's largest FP8 value stays >= 448 / 64 = 7
# The ops onnxruntime's QDQPropagationTransformer moves a Q/DQ pair across.
PROPAGATED_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice",
                            "MaxPool"})


def bias_of(node: gs.Node, initializers: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The float bias a weighted op adds: a Conv/ConvTranspose/Gemm's input 2, or the
    constant of the Add right after a MatMul (onnxruntime fuses the two into a Gemm)."""
    names: list[str] = []
    if node.op in ops.BIAS_INPUT and len(node.inputs) > ops.BIAS_INPUT[node.op]:
        names = [node.inputs[ops.BIAS_INPUT[node.op]].name]
    elif node.op == ops.MATMUL and node.outputs:
        for user in node.outputs[0].outputs:
            if user.op in ops.ADD_OPS:
                names += [t.name for t in user.inputs if t.name in initializers]
    values = [numpy_helper.to_array(initializers[n]) for n in names if n in initializers]
    return np.concatenate([v.astype(np.float32).ravel() for v in values]) if values else None


def headroom_bits(bias: np.ndarray | None, input_scale: float | None,
                  weight_scale: float) -> int:
    """The power of two (k >= 0) to raise an FP8 weight scale by so that max|bias| /
    (input_scale x weight_scale x 2**k) stays below BIAS_QUOTIENT_LIMIT (at most
    MAX_HEADROOM_BITS)."""
    if bias is None or not bias.size or not input_scale or weight_scale <= 0:
        return 0
    quotient = float(np.max(np.abs(bias))) / (input_scale * weight_scale)
    if not math.isfinite(quotient) or quotient <= BIAS_QUOTIENT_LIMIT:
        return 0
    return min(MAX_HEADROOM_BITS, math.ceil(math.log2(quotient / BIAS_QUOTIENT_LIMIT)))


def _reaches_float8_q(index: GraphIndex, tensor: str, float8_q: set[str]) -> bool:
    """Whether `tensor` is quantized by an FP8 QuantizeLinear after nothing but ops Q/DQ
    propagation crosses, each the only reader of its input (what the propagation needs)."""
    for _ in range(16):
        users = index.consumers.get(tensor, [])
        if len(users) != 1 or tensor in index.graph_outputs:
            return False
        node = users[0].node
        if node.name in float8_q:
            return True
        if node.op_type not in PROPAGATED_OPS or users[0].index != 0:
            return False
        tensor = node.output[0]
    return False


def _squeeze_is_flatten(index: GraphIndex, node: onnx.NodeProto, rank: int | None) -> bool:
    """A Squeeze (opset >= 13: axes as input 1) of every dimension but the batch and one
    other: the same as Flatten(axis=1)."""
    if rank is None or len(node.input) < 2:
        return False
    axes = index.constant_value(node.input[1])
    if axes is None:
        return False
    axes = {int(a) % rank for a in np.ravel(axes)}
    return 0 not in axes and rank - len(axes) == 2


def flatten_squeezes(model: onnx.ModelProto, float8_q: set[str]) -> list[str]:
    """Rewrite as Flatten(axis=1) each Squeeze whose output an FP8 QuantizeLinear (a name
    in `float8_q`) quantizes through propagated ops and that is a flatten; returns their
    names."""
    index = GraphIndex(model.graph)
    found = [n for n in index.nodes if n.op_type == "Squeeze"
             and _reaches_float8_q(index, n.output[0], float8_q)]
    if not found:
        return []
    from qdq_onnx.files.onnx_files import skeleton
    from qdq_onnx.graph.shapes import inferred_shapes

    shapes = inferred_shapes(skeleton(model))
    done = []
    for node in found:
        shape = shapes.get(node.input[0])
        if _squeeze_is_flatten(index, node, len(shape) if shape is not None else None):
            node.op_type = "Flatten"
            del node.input[1:]
            node.attribute.append(helper.make_attribute("axis", 1))
            done.append(node.name)
    used = {t for n in model.graph.node for t in n.input}
    used |= {o.name for o in model.graph.output}
    for i in reversed(range(len(model.graph.initializer))):
        if model.graph.initializer[i].name not in used:
            del model.graph.initializer[i]
    return done


def relu_fusion_hazards(model: onnx.ModelProto) -> list[str]:
    """The FP32 Relus whose only reader is a float8 QuantizeLinear: the ones onnxruntime's
    ReluQuantFusion removes at its default optimization level (see the module docstring)."""
    from qdq_onnx.graph.runtime_view import FLOAT8_TYPES

    index = GraphIndex(model.graph)
    found = []
    for node in index.nodes:
        if node.op_type != "Relu":
            continue
        uses = index.consumers.get(node.output[0], [])
        if len(uses) != 1 or uses[0].node.op_type != ops.QUANTIZE or len(uses[0].node.input) < 3:
            continue
        zp = index.initializers.get(uses[0].node.input[2])
        if zp is not None and zp.data_type in FLOAT8_TYPES:
            found.append(node.name)
    return found

