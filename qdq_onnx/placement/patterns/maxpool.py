"""MaxPool next to quantized branches (ResNet v2 shortcut, Inception concat)."""

from __future__ import annotations

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.patterns.base import PatternKind, layer_of
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal


def maxpool(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
            rule: PatternRule) -> list[Proposal]:
    """mode all: every MaxPool input; branch: MaxPools feeding one of `feeds`; none: off."""
    mode = rule.options["mode"]
    if mode == "none":
        return []
    feeds = set(rule.options["feeds"])
    out: list[Proposal | None] = []
    for node in index.nodes:
        if node.op_type != "MaxPool":
            continue
        if mode == "branch" and not any(s.op_type in feeds for s in index.successors(node)):
            continue
        reason = ("MaxPool feeds a residual/concat junction" if mode == "branch"
                  else "all MaxPool inputs quantized (rule mode: all)")
        out.append(slot_proposal(index, node, 0, True, rules, rule.id, reason,
                                 PRIORITY_PATTERN, layer_of(layers, node)))
    return [p for p in out if p is not None]


KIND = PatternKind("maxpool", maxpool,
                   options={"mode": "branch", "feeds": ["Add", "Sum", "Concat"]},
                   choices={"mode": {"all", "branch", "none"}})
