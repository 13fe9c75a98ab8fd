"""BatchNorm after a non-weighted op (pre-activation ResNet v2): quantize its input."""

from __future__ import annotations

import onnx

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.patterns.base import PatternKind, layer_of, produced_by_weighted
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal


def batchnorm_input(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                    rule: PatternRule) -> list[Proposal]:
    """Proposals for BatchNorm nodes (and Keras BatchNormalization layers that arrived
    unfolded as other ops) whose input is not produced by a weighted op."""
    anchors: list[tuple[onnx.NodeProto, str | None]] = [
        (n, layer_of(layers, n)) for n in index.nodes if n.op_type in rule.options["ops"]]
    seen = {n.name for n, _ in anchors}
    for la in layers.layers if layers.from_keras else []:
        if la.class_name == "BatchNormalization" and la.anchor and la.anchor not in seen:
            anchors.append((index.by_name[la.anchor], la.name))
    out: list[Proposal | None] = []
    for node, layer in anchors:
        live = index.live_inputs(node)
        if not live or produced_by_weighted(index, rules, node.input[live[0]]):
            continue
        out.append(slot_proposal(index, node, live[0], True, rules, rule.id,
                                 "BatchNorm not fed by a weighted op: quantize its input",
                                 PRIORITY_PATTERN, layer))
    return [p for p in out if p is not None]


KIND = PatternKind("batchnorm_input", batchnorm_input,
                   options={"ops": ["BatchNormalization"]})
