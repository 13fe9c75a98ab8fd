"""Concat: left to TensorRT (none), every input quantized (all), or one shared scale."""

from __future__ import annotations

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.patterns.base import PatternKind, layer_of
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal


def concat(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
           rule: PatternRule) -> list[Proposal]:
    """Proposals for the live inputs of every Concat (mode all/shared)."""
    mode = rule.options["mode"]
    if mode == "none":
        return []
    out: list[Proposal | None] = []
    for node in index.nodes:
        if node.op_type != "Concat":
            continue
        group = f"concat:{node.name}" if mode == "shared" else None
        out.extend(slot_proposal(index, node, i, True, rules, rule.id,
                                 "Concat input" + (" (shared scale)" if group else ""),
                                 PRIORITY_PATTERN, layer_of(layers, node), group)
                   for i in index.live_inputs(node))
    return [p for p in out if p is not None]


KIND = PatternKind("concat", concat, options={"mode": "none"},
                   choices={"mode": {"all", "shared", "none"}})
