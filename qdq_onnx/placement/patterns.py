"""Graph-pattern rules: residual Add, BatchNorm after a non-weighted op, MaxPool next to
branches, squeeze-excitation Multiply, Concat. Pure functions: graph in, proposals out."""

from __future__ import annotations

from collections.abc import Callable

import onnx

from qdq_onnx.graph.index import WEIGHTED_OPS, GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.slots import slot_proposal
from qdq_onnx.policy.rules import PatternRule, RuleSet

PatternFn = Callable[[GraphIndex, LayerGraph, RuleSet, PatternRule], list[Proposal]]


def _layer_of(layers: LayerGraph, node: onnx.NodeProto) -> str | None:
    la = layers.owner.get(node.name)
    return la.name if la is not None and layers.layer_map is not None else None


def weighted_branch(index: GraphIndex, tensor: str, options: dict,
                    through_qdq: bool = False) -> tuple[str | None, bool]:
    """(The weighted node whose output reaches `tensor` through fusible ops only, each tensor
    on the way read by nothing else, or None; whether a Q->DQ pair sits on the way).

    The residual-Add placement rule walks float graphs; `qdq-onnx lint` walks Q/DQ graphs
    with `through_qdq=True`, so policy and check share one definition of "the branch that
    fuses into the Add"."""
    through = set(options["through"])
    affine = options.get("through_constant_affine", True)
    quantized, hops, t = False, 0, tensor
    while hops <= options["max_hops"]:
        if index.consumer_count(t) != 1:
            return None, quantized
        node = index.producer.get(t)
        if node is None:
            return None, quantized
        if through_qdq and node.op_type == "DequantizeLinear":
            q = index.producer.get(node.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                return None, quantized
            quantized, t = True, q.input[0]
            continue
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and (
                index.is_constant(node.input[1]) or (through_qdq and _dequantized(
                    index, node.input[1]))):
            return node.name, quantized
        live = index.live_inputs(node)
        passes = node.op_type in through or (
            affine and node.op_type in ("Mul", "Add", "Sub", "Div") and len(live) == 1)
        if not passes or not live:
            return None, quantized
        t, hops = node.input[live[0]], hops + 1
    return None, quantized


def _dequantized(index: GraphIndex, tensor: str) -> bool:
    node = index.producer.get(tensor)
    return node is not None and node.op_type == "DequantizeLinear"


def residual_add(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                 rule: PatternRule) -> list[Proposal]:
    out: list[Proposal] = []
    choice = rule.options["branch_choice"]
    for node in index.nodes:
        if node.op_type not in rule.options["ops"]:
            continue
        live = index.live_inputs(node)
        if len(live) < 2 or len(live) != len([t for t in node.input if t]):
            continue  # a bias Add (one constant input) is not a residual junction
        branches = {i: weighted_branch(index, node.input[i], rule.options)[0] for i in live}
        candidates = [i for i in live if branches[i] is not None]
        layer = _layer_of(layers, node)
        if not candidates:
            if rule.options["when_no_weighted_branch"] == "all":
                for i in live:
                    p = slot_proposal(index, node, i, True, rules, rule.id,
                                      "no input comes straight from a weighted op: quantize "
                                      "all so the Add runs in INT8", PRIORITY_PATTERN, layer)
                    out.append(p)
            continue
        if choice == "first":
            keep = candidates[0]
        elif choice == "last":
            keep = candidates[-1]
        else:
            dist = {i: index.fork_distance(node.input[i]) for i in candidates}
            keep = max(candidates, key=lambda i: (dist[i], -i))
        for i in live:
            if i == keep:
                reason = f"weighted branch ({branches[i]}): left float so it fuses into the Add"
                out.append(slot_proposal(index, node, i, False, rules, rule.id, reason,
                                         PRIORITY_PATTERN, layer))
            else:
                out.append(slot_proposal(index, node, i, True, rules, rule.id,
                                         "skip input of a residual Add", PRIORITY_PATTERN,
                                         layer))
    return [p for p in out if p is not None]


def _feeds_from_weighted(index: GraphIndex, tensor: str) -> bool:
    node = index.producer.get(tensor)
    return node is not None and node.op_type in WEIGHTED_OPS


def batchnorm_input(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                    rule: PatternRule) -> list[Proposal]:
    out: list[Proposal] = []
    anchors: list[tuple[onnx.NodeProto, str | None]] = [
        (n, _layer_of(layers, n)) for n in index.nodes if n.op_type in rule.options["ops"]]
    seen = {n.name for n, _ in anchors}
    for la in layers.layers if layers.from_keras else []:
        if la.class_name == "BatchNormalization" and la.anchor and la.anchor not in seen:
            anchors.append((index.by_name[la.anchor], la.name))
    for node, layer in anchors:
        live = index.live_inputs(node)
        if not live or _feeds_from_weighted(index, node.input[live[0]]):
            continue
        out.append(slot_proposal(index, node, live[0], True, rules, rule.id,
                                 "BatchNorm not fed by a weighted op: quantize its input",
                                 PRIORITY_PATTERN, layer))
    return [p for p in out if p is not None]


def maxpool(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
            rule: PatternRule) -> list[Proposal]:
    mode = rule.options["mode"]
    if mode == "none":
        return []
    feeds = set(rule.options["feeds"])
    out: list[Proposal] = []
    for node in index.nodes:
        if node.op_type != "MaxPool":
            continue
        if mode == "branch" and not any(s.op_type in feeds for s in index.successors(node)):
            continue
        reason = ("MaxPool feeds a residual/concat junction" if mode == "branch"
                  else "all MaxPool inputs quantized (rule mode: all)")
        out.append(slot_proposal(index, node, 0, True, rules, rule.id, reason,
                                 PRIORITY_PATTERN, _layer_of(layers, node)))
    return [p for p in out if p is not None]


def _squeezes(index: GraphIndex, gate: str, source: str, rule: PatternRule) -> bool:
    """True if the gate tensor is computed from a global pooling of `source`."""
    t = gate
    for _ in range(rule.options["max_hops"] + 4):
        node = index.producer.get(t)
        if node is None:
            return False
        if node.op_type in ("GlobalAveragePool", "ReduceMean", "GlobalMaxPool"):
            return node.input[0] == source
        live = index.live_inputs(node)
        if not live:
            return False
        t = node.input[live[0]]
    return False


def se_multiply(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                rule: PatternRule) -> list[Proposal]:
    gates = set(rule.options["gate_ops"])
    through = set(rule.options["through"])
    out: list[Proposal] = []
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
            if _squeezes(index, producer.input[0], node.input[other], rule):
                for i in live:
                    out.append(slot_proposal(index, node, i, True, rules, rule.id,
                                             "squeeze-excitation Multiply: both inputs",
                                             PRIORITY_PATTERN, _layer_of(layers, node)))
                break
    return [p for p in out if p is not None]


def concat(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
           rule: PatternRule) -> list[Proposal]:
    mode = rule.options["mode"]
    if mode == "none":
        return []
    out: list[Proposal] = []
    for node in index.nodes:
        if node.op_type != "Concat":
            continue
        group = f"concat:{node.name}" if mode == "shared" else None
        for i in index.live_inputs(node):
            out.append(slot_proposal(index, node, i, True, rules, rule.id,
                                     "Concat input" + (" (shared scale)" if group else ""),
                                     PRIORITY_PATTERN, _layer_of(layers, node), group))
    return [p for p in out if p is not None]


PATTERNS: dict[str, PatternFn] = {
    "residual_add": residual_add,
    "batchnorm_input": batchnorm_input,
    "maxpool": maxpool,
    "se_multiply": se_multiply,
    "concat": concat,
}
