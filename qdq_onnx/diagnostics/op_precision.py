"""Which precision each compute op of a Q/DQ model runs in under a strongly typed TensorRT
build (the only kind TensorRT 11 makes): a weighted op is quantized when its data and weight
are dequantized; another op when all its float inputs are dequantized and its outputs are
quantized again (DQ -> op -> Q); every other op runs in the type its float inputs carry.
Layout and data-movement ops are not compute."""

from __future__ import annotations

import json
from dataclasses import dataclass

import onnx

from qdq_onnx.files.metadata import PLAN_KEY, get_metadata
from qdq_onnx.graph import ops
from qdq_onnx.graph.element_types import element_types
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.qdq import dequantized
from qdq_onnx.precision.graph_types import OpTypes
from qdq_onnx.quantize.schemes import zero_point_scheme

# Ops that move or relabel data without arithmetic (TensorRT runs them in any type).
NOT_COMPUTE = frozenset({*ops.LAYOUT_OPS, *ops.QDQ_OPS, "Cast", "CastLike", "Constant",
                         "ConstantOfShape", "Shape", "Size", "Concat", "Split", "Slice",
                         "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Pad",
                         "Squeeze", "Range", "NonZero", "Where", "Equal", "Less", "Greater",
                         "Not", "And", "Or", "ScatterND", "ScatterElements", "TopK"})
_NAMES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16",
          onnx.TensorProto.BFLOAT16: "bf16", onnx.TensorProto.DOUBLE: "fp64"}


@dataclass(frozen=True)
class OpPrecision:
    """One compute op: `runs_in` is a scheme's element name (int8, fp8) for a quantized
    op, else fp16/bf16/fp32; `rule` and `reason` say why, when the plan kept it FP32."""

    node: str
    op: str
    runs_in: str
    rule: str | None = None
    reason: str | None = None


def op_precisions(model: onnx.ModelProto, weighted_ops: frozenset[str]) -> list[OpPrecision]:
    """Every compute op with a float input or output, in graph order."""
    index = GraphIndex(model.graph)
    types = element_types(model)
    kept = _kept(model)
    op_types = OpTypes(model)
    out = []
    for node in index.nodes:
        if node.op_type in NOT_COMPUTE:
            continue
        floats = [t for t in node.input if t and _NAMES.get(types.get(t))]
        outs = [t for t in node.output if t and _NAMES.get(types.get(t))]
        if not floats and not outs:
            continue
        # Slots an op's definition fixes to one type (Resize's scales) say nothing of the
        # type it computes in.
        floats = [t for i, t in enumerate(node.input) if t in floats and
                  not op_types.fixed_input(node, i)]
        live = [t for t in floats if not index.is_constant(t)]
        quantized = _quantized(index, node, live, weighted_ops)
        if quantized:
            out.append(OpPrecision(node.name, node.op_type, quantized))
            continue
        names = {_NAMES[types[t]] for t in (live or floats or outs)}
        runs = names.pop() if len(names) == 1 else "mixed"
        rule, reason = kept.get(node.name, (None, None))
        out.append(OpPrecision(node.name, node.op_type, runs, rule, reason))
    return out


def _quantized(index: GraphIndex, node: onnx.NodeProto, live: list[str],
               weighted_ops: frozenset[str]) -> str | None:
    """The quantized element type an op runs in, or None."""
    if node.op_type in weighted_ops and len(node.input) > 1:
        data, weight = dequantized(index, node.input[0]), dequantized(index, node.input[1])
        if data is None or weight is None:
            return None
        return _element(index, data.dq)
    found = [dequantized(index, t) for t in live]
    if not live or any(d is None for d in found):
        return None
    # Not a weighted op: quantized only between Q/DQ (TensorRT fuses DQ -> op -> Q); one
    # whose output is read as float runs in its DequantizeLinear's output type.
    for out in node.output:
        uses = index.consumers.get(out, [])
        if out in index.graph_outputs or not uses or \
                any(u.node.op_type != ops.QUANTIZE for u in uses):
            return None
    return _element(index, found[0].dq)


def _element(index: GraphIndex, dq: onnx.NodeProto) -> str:
    """The scheme family a DequantizeLinear's zero point says (int8, fp8)."""
    return zero_point_scheme(index, dq).name.split("-")[0]


def _kept(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    text = get_metadata(model, PLAN_KEY)
    if not text:
        return {}
    return {k["node"]: (k["rule"], k["reason"]) for k in json.loads(text).get("kept_fp32", [])}


def precision_counts(rows: list[OpPrecision]) -> dict[str, int]:
    """Compute ops per precision, e.g. {'int8': 54, 'fp16': 68}."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.runs_in] = counts.get(r.runs_in, 0) + 1
    return counts
