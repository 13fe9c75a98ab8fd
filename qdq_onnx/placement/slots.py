"""Turning "quantize this node's data/weight inputs" into per-slot proposals, with the weight
axis the rule file gives for the op. Shared by op rules, patterns and spec entries."""

from __future__ import annotations

import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.placement.proposals import Proposal
from qdq_onnx.placement.rules.model import OpRule, RuleSet


def node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def weight_input(node: onnx.NodeProto, rule: OpRule | None) -> int | None:
    if not ops.has_weight_slot(node.op_type) or len(node.input) < 2:
        return None
    return rule.weight_input if rule is not None else 1


def weight_axis(index: GraphIndex, node: onnx.NodeProto, slot: int, rules: RuleSet) -> int:
    """The per-channel axis of `node.input[slot]`, normalised to a non-negative value."""
    # A spec can quantize a weighted op the rule file in force leaves alone (e.g. a
    # ConvTranspose under nvidia-tf-toolkit): its axis is TensorRT's, from the bundled
    # TensorRT rules, so the axes are written down once.
    rule = rules.weight_axis_rule(node.op_type)
    if rule is None:
        raise QdqError(f"{node.name}: no weight axis known for op {node.op_type}")
    axis_rule = rule.weight_axis
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
    if ops.has_weight_slot(node.op_type):
        data = [i for i in data if i in (0, 1)]  # never the bias
    return data, weights
