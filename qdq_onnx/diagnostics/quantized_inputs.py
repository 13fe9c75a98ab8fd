"""Reading a Q/DQ graph back: which node inputs are fed by DequantizeLinear, with which
scale shape, axis, precision scheme and rule. Works on any Q/DQ ONNX (ours or another tool's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import onnx

from qdq_onnx.files.metadata import LAYER_MAP_KEY, RULE_KEY, get_metadata
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.graph.qdq import dequantized
from qdq_onnx.quantize.schemes import planned_schemes, zero_point_scheme


@dataclass
class QuantizedInput:
    node: str
    op_type: str
    input: int
    kind: str  # activation | weight
    axis: int | None
    scales: int
    scheme: str
    rule: str
    layer: str | None


def _rule(node: onnx.NodeProto) -> str:
    for prop in node.metadata_props:
        if prop.key == RULE_KEY:
            return prop.value
    return "-"


def quantized_inputs(model: onnx.ModelProto) -> list[QuantizedInput]:
    index = GraphIndex(model.graph)
    layers = LayerGraph(model, index) if get_metadata(model, LAYER_MAP_KEY) else None
    planned = planned_schemes(model)
    out: list[QuantizedInput] = []
    for node in index.nodes:
        if node.op_type in ops.QDQ_OPS:
            continue
        for i, t in enumerate(node.input):
            found = dequantized(index, t)
            if found is None:
                continue
            dq, source = found.dq, found.source
            kind = "weight" if index.is_constant(source) else "activation"
            shape = index.constant_shape(dq.input[1]) or ()
            count = 1
            for d in shape:
                count *= d
            axis = attribute(dq, "axis", None) if count > 1 else None
            owner = layers.owner.get(node.name) if layers is not None else None
            scheme = planned.get(source) or zero_point_scheme(index, dq)
            out.append(QuantizedInput(node.name, node.op_type, i, kind, axis, count,
                                      scheme.name, _rule(dq),
                                      owner.name if owner is not None else None))
    return out


@dataclass
class ModelSummary:
    """What `inspect` shows of a Q/DQ model; the plan's records are its JSON entries."""

    quantized_inputs: list[QuantizedInput]
    quantized_nodes: int
    quantize_linear: int
    dequantize_linear: int
    high_precision: str  # the float remainder's type, or "not recorded"
    compute_ops: dict[str, int]  # compute ops per precision of a strongly typed build
    kept_fp32: list[dict]  # the plan's FP32 islands, each with rule and reason
    kept_float: list[dict]  # left float by the cost model, the guard or the user's spec
    accuracy_guard: dict  # the guard's record ({} when it did not run)
    scale_refinement: dict  # scale refinement's record ({} when it did not run)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what `inspect --format json` prints)."""
        return asdict(self)


def summary(model: onnx.ModelProto) -> ModelSummary:
    """Quantized inputs, Q/DQ node counts and the float remainder: its type, the compute
    ops per precision of a strongly typed build, and the FP32 islands the plan records."""
    import json

    from qdq_onnx.diagnostics.op_precision import op_precisions, precision_counts
    from qdq_onnx.files.metadata import PLAN_KEY
    from qdq_onnx.placement.plan import USER_RULES
    from qdq_onnx.precision.stage import rules_of

    rows = quantized_inputs(model)
    index = GraphIndex(model.graph)
    rules = rules_of(model)  # the rule file the plan names (the bundled TensorRT one else)
    precisions = op_precisions(model, rules.weighted_ops())
    plan = json.loads(get_metadata(model, PLAN_KEY) or "{}")
    policy = {r.id for r in rules.cost} | {plan.get("accuracy_guard", {}).get("rule")}
    return ModelSummary(
        quantized_inputs=rows, quantized_nodes=len({r.node for r in rows}),
        quantize_linear=sum(n.op_type == "QuantizeLinear" for n in index.nodes),
        dequantize_linear=sum(n.op_type == "DequantizeLinear" for n in index.nodes),
        high_precision=plan.get("high_precision", "fp32" if plan else "not recorded"),
        compute_ops=precision_counts(precisions), kept_fp32=plan.get("kept_fp32", []),
        kept_float=[d for d in plan.get("left_float", []) if d.get("rule") in policy
                    or str(d.get("rule")).startswith(USER_RULES)],
        accuracy_guard=plan.get("accuracy_guard", {}),
        scale_refinement=plan.get("scale_refinement", {}))
