"""Turning "quantize this node's data/weight inputs" into per-slot proposals, with the weight
axis the rule file gives for the op. Shared by op rules, patterns and spec entries."""

from __future__ import annotations

import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.graph.index import WEIGHTED_OPS, GraphIndex
from qdq_onnx.placement.proposals import Proposal
from qdq_onnx.policy.rules import OpRule, RuleSet, WeightAxis

# Used only when the rule file in force has no op rule for a weighted op that a spec names.
_FALLBACK_AXIS = {
    "Conv": WeightAxis(fixed=0),
    "ConvTranspose": WeightAxis(fixed=1),
    "Gemm": WeightAxis(attribute="transB", by_value=((0, 1), (1, 0)), default=0),
    "MatMul": WeightAxis(fixed=-1),
}


def node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def weight_input(node: onnx.NodeProto, rule: OpRule | None) -> int | None:
    if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
        return None
    return rule.weight_input if rule is not None else 1


def weight_axis(index: GraphIndex, node: onnx.NodeProto, slot: int, rules: RuleSet) -> int:
    """The per-channel axis of `node.input[slot]`, normalised to a non-negative value."""
    rule = rules.op_rule_for(node.op_type)
    axis_rule = rule.weight_axis if rule is not None and rule.weight_axis else None
    if axis_rule is None:
        axis_rule = _FALLBACK_AXIS.get(node.op_type)
    if axis_rule is None:
        raise QdqError(f"{node.name}: no weight axis known for op {node.op_type}")
    axis = axis_rule.resolve(node_attrs(node))
    shape = index.constant_shape(node.input[slot]) or ()
    rank = len(shape)
    if rank == 0:
        raise QdqError(f"{node.name}: weight {node.input[slot]!r} is a scalar")
    if not -rank <= axis < rank:
        raise QdqError(f"{node.name}: weight axis {axis} is out of range for a weight of "
                       f"shape {list(shape)}")
    return axis % rank


def slot_proposal(index: GraphIndex, node: onnx.NodeProto, slot: int, quantize: bool,
                  rules: RuleSet, rule_id: str, reason: str, priority: int,
                  layer: str | None, scale_group: str | None = None,
                  as_weight: bool | None = None) -> Proposal | None:
    """One proposal for `node.input[slot]`; weights (constant input of a weighted op) get
    their per-channel axis. Returns None for an empty or out-of-range slot."""
    if slot >= len(node.input) or not node.input[slot]:
        return None
    tensor = node.input[slot]
    rule = rules.op_rule_for(node.op_type)
    w_slot = weight_input(node, rule)
    is_weight = as_weight if as_weight is not None else (
        slot == w_slot and index.is_constant(tensor))
    if not is_weight and index.is_constant(tensor):
        return None  # constants other than weights (bias, shapes) are never quantized
    axis = weight_axis(index, node, slot, rules) if is_weight and quantize else None
    return Proposal(consumer=node.name, input=slot, tensor=tensor, quantize=quantize,
                    kind="weight" if is_weight else "activation", axis=axis, rule=rule_id,
                    reason=reason, priority=priority, layer=layer, scale_group=scale_group)


def data_and_weight_slots(index: GraphIndex, node: onnx.NodeProto, rules: RuleSet
                          ) -> tuple[list[int], list[int]]:
    """(activation slots, weight slots) of a node: weights are constant inputs of weighted ops
    at the rule's weight index; everything live is data."""
    rule = rules.op_rule_for(node.op_type)
    w_slot = weight_input(node, rule)
    weights = [w_slot] if w_slot is not None and w_slot < len(node.input) \
        and index.is_constant(node.input[w_slot]) else []
    data = [i for i in index.live_inputs(node)]
    if node.op_type in WEIGHTED_OPS:
        data = [i for i in data if i in (0, 1)]  # never the bias
    return data, weights
