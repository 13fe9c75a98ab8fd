"""The op taxonomy's ONNX facts, in one place: what an op type *is*, independent of policy.

Which of these ops TensorRT quantizes, their per-channel axes, the ops it fuses after a
weighted op and the ops it propagates Q/DQ through are policy: they live in the rule file and
are read through `RuleSet` (`weighted_ops()`, `fusible_followers`, `precision_neutral`).
A test fails if a weighted-op name is spelled out anywhere else in the package.
"""

from __future__ import annotations

CONV = "Conv"
CONV_TRANSPOSE = "ConvTranspose"
GEMM = "Gemm"
MATMUL = "MatMul"

# ONNX ops whose input 1 can be a weight (a constant the op multiplies by).
WEIGHTED_OPS = frozenset({CONV, CONV_TRANSPOSE, GEMM, MATMUL})
WEIGHT_INPUT = 1
# Ops with a bias input (input 2) that is added after the weight product.
BIAS_INPUT = {CONV: 2, CONV_TRANSPOSE: 2, GEMM: 2}

QUANTIZE = "QuantizeLinear"
DEQUANTIZE = "DequantizeLinear"
QDQ_OPS = frozenset({QUANTIZE, DEQUANTIZE})
# Pre-quantized integer ops (the QOperator format); TensorRT accepts only Q/DQ.
INTEGER_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})
ADD_OPS = frozenset({"Add", "Sum"})
# Elementwise arithmetic: with one constant input, an affine op (a BatchNorm left unfolded,
# an attention's score scale).
AFFINE_OPS = frozenset({"Mul", "Add", "Sub", "Div"})
# Ops that only relabel or move data (input 0 is the data; any other input is a shape).
LAYOUT_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Identity"})


def has_weight_slot(op_type: str) -> bool:
    """Whether input 1 of this op type is a weight when it is a constant."""
    return op_type in WEIGHTED_OPS


def is_convolution(op_type: str) -> bool:
    return op_type in (CONV, CONV_TRANSPOSE)


def is_convolution_class(class_name: str) -> bool:
    """A Keras convolution layer class (Conv1D/2D/3D, DepthwiseConv2D, SeparableConv2D,
    Conv2DTranspose) or an ONNX convolution op, as the original toolkit matched them."""
    return CONV in class_name


def output_channel_axis(op_type: str, trans_b: int = 0) -> tuple[int, int] | None:
    """(axis of the weight, axis of the output) holding the output channels, for folding a
    per-channel affine op into the weight; None for ops where that is not a plain axis."""
    if op_type == CONV:
        return 0, 1
    if op_type == GEMM:
        return (0 if trans_b else 1), 1
    if op_type == MATMUL:
        return 1, -1
    return None
