"""Layer normalisation left decomposed (an ONNX file below opset 17, where it cannot be one
LayerNormalization op): every input slot inside it stays float, so no op rule quantizes its
mean or variance and no residual rule quantizes its normalising Add. TensorRT runs
normalisation in float; `qdq-onnx lint` flags a quantized mean (TRT-L015)."""

from __future__ import annotations

from qdq_onnx.convert.layernorm import match_layernorm
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.patterns.base import PatternKind, layer_of
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal


def normalization(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                  rule: PatternRule) -> list[Proposal]:
    """Float proposals for the live inputs of every node of a decomposed normalisation."""
    out: list[Proposal | None] = []
    for node in index.nodes:
        if node.op_type not in rule.options["ops"]:
            continue
        found = match_layernorm(index, node)
        if found is None:
            continue
        for member in found["nodes"]:
            out.extend(slot_proposal(index, member, i, False, rules, rule.id,
                                     "inside a layer normalisation: kept float",
                                     PRIORITY_PATTERN, layer_of(layers, member))
                       for i in index.live_inputs(member))
    return [p for p in out if p is not None]


KIND = PatternKind("normalization", normalization, options={"ops": ["GlobalAveragePool"]})
