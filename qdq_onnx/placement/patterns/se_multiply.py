"""Squeeze-excitation Multiply (EfficientNet): a feature map times a sigmoid gate computed
from a global pooling of that same feature map; both inputs quantized."""

from __future__ import annotations

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.patterns.base import PatternKind, layer_of
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal

_POOLS = ("GlobalAveragePool", "ReduceMean", "GlobalMaxPool")


def _squeezes(index: GraphIndex, gate: str, source: str, max_hops: int) -> bool:
    """True if the gate tensor is computed from a global pooling of `source`."""
    t = gate
    for _ in range(max_hops + 4):
        node = index.producer.get(t)
        if node is None:
            return False
        if node.op_type in _POOLS:
            return node.input[0] == source
        live = index.live_inputs(node)
        if not live:
            return False
        t = node.input[live[0]]
    return False


def se_multiply(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                rule: PatternRule) -> list[Proposal]:
    """Proposals for both inputs of every Mul whose one input is an SE gate of the other."""
    gates = set(rule.options["gate_ops"])
    through = set(rule.options["through"])
    out: list[Proposal | None] = []
    for node in index.nodes:
        if node.op_type != "Mul":
            continue
        live = index.live_inputs(node)
        if len(live) != 2:
            continue
        for g, other in ((live[0], live[1]), (live[1], live[0])):
            t = node.input[g]
            producer = index.producer.get(t)
            while producer is not None and producer.op_type in through:
                t = producer.input[0]
                producer = index.producer.get(t)
            if producer is None or producer.op_type not in gates:
                continue
            if _squeezes(index, producer.input[0], node.input[other], rule.options["max_hops"]):
                out.extend(slot_proposal(index, node, i, True, rules, rule.id,
                                         "squeeze-excitation Multiply: both inputs",
                                         PRIORITY_PATTERN, layer_of(layers, node))
                           for i in live)
                break
    return [p for p in out if p is not None]


KIND = PatternKind("se_multiply", se_multiply,
                   options={"gate_ops": ["Sigmoid", "HardSigmoid"], "through": [],
                            "max_hops": 6})
