"""The strongly typed checks (`lint --typing strong`, the default): what a TensorRT 11
build runs in FP32, Q/DQ whose types do not match their neighbours, and Cast chains.
Registered as strongly typed: under `--typing weak` (TensorRT 10 and older with
--fp16/--int8) lint does not run them."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from qdq_onnx.diagnostics.lint.checks import Hit, check
from qdq_onnx.diagnostics.lint.context import LintContext
from qdq_onnx.graph import ops
from qdq_onnx.types.float_type import FP32, REDUCED_ELEM_TYPES

# Casts between these are reformats of data; integer Casts are shape arithmetic.
FLOAT_TYPES = frozenset({FP32.elem_type, *REDUCED_ELEM_TYPES})


@check("fp32-compute-op", strong_typing=True)
def fp32_compute_op(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.precisions:
        if row.runs_in in ("fp32", "mixed") and row.rule is None:
            yield row.node, (f"{row.op} runs in FP32 in a strongly typed build: its float "
                             "inputs are FP32 and no plan records why (type the remainder: "
                             "--high-precision fp16)")


@check("qdq-type-mismatch", strong_typing=True)
def qdq_type_mismatch(ctx: LintContext) -> Iterator[Hit]:
    types = ctx.element_types
    index = ctx.index
    for node in ctx.qdq_nodes():
        scale = types.get(node.input[1])
        if node.op_type == ops.QUANTIZE and types.get(node.input[0]) not in (None, scale):
            yield node.name, (f"QuantizeLinear reads {_name(types.get(node.input[0]))} with "
                              f"a {_name(scale)} scale")
        if node.op_type != ops.DEQUANTIZE:
            continue
        q = index.producer.get(node.input[0])
        if q is not None and q.op_type == ops.QUANTIZE and types.get(q.input[1]) != scale:
            yield node.name, (f"the pair's QuantizeLinear scale is {_name(types.get(q.input[1]))}"
                              f" and its DequantizeLinear scale {_name(scale)}")
        for use in index.consumers.get(node.output[0], []):
            if use.node.op_type == "Cast":
                yield node.name, (f"DequantizeLinear outputs {_name(scale)} and a Cast "
                                  f"({use.node.name}) retypes it before its consumer: TensorRT "
                                  "cannot fuse the DQ into the op that reads it")


@check("cast-chain", strong_typing=True)
def cast_chain(ctx: LintContext) -> Iterator[Hit]:
    types = ctx.element_types
    for node in ctx.index.nodes:
        producer = ctx.index.producer.get(node.input[0]) if node.input else None
        if node.op_type == "Cast" and producer is not None and producer.op_type == "Cast" \
                and {types.get(producer.output[0]), types.get(node.output[0])} <= FLOAT_TYPES:
            yield node.name, f"Cast reads the Cast {producer.name}: one Cast (or none) does it"


def _name(elem: int | None) -> str:
    return "unknown" if not elem else onnx.TensorProto.DataType.Name(elem)
