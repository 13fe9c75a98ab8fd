"""Residual Add: quantize the skip input(s), leave the weighted branch float so TensorRT fuses
Conv(+BN)(+act)+Add into one INT8 kernel. The branch walk is shared with `qdq-onnx lint`."""

from __future__ import annotations

from typing import Any

import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.patterns.base import PatternKind, layer_of
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal


def branch_options(rules: RuleSet) -> dict[str, Any]:
    """The residual rule's options in `rules` (switched on or not), else the defaults."""
    rule = rules.patterns.get("residual_add")
    return rule.options if rule is not None else dict(KIND.options)


def weighted_branch(index: GraphIndex, rules: RuleSet, tensor: str,
                    through_qdq: bool = False) -> tuple[str | None, bool]:
    """(The weighted node whose output reaches `tensor` through ops TensorRT fuses after it,
    each tensor on the way read by nothing else, or None; whether a Q->DQ pair sits on the
    way).

    The placement rule walks float graphs; `qdq-onnx lint` walks Q/DQ graphs with
    `through_qdq=True`, so policy and check share one definition of "the branch that fuses
    into the Add". The fusible ops are the rule file's `taxonomy.fusible_followers`."""
    path, quantized = branch_path(index, rules, tensor, through_qdq)
    return (path[-1].name if path else None), quantized


def branch_path(index: GraphIndex, rules: RuleSet, tensor: str, through_qdq: bool = False,
                also_through: frozenset[str] = frozenset()
                ) -> tuple[list[onnx.NodeProto], bool]:
    """The walk of `weighted_branch`: (the nodes walked back from `tensor`, ending with the
    weighted node, or [] when there is none; whether a Q->DQ pair sits on the way). Ops in
    `also_through` are walked through on their input 0 as well (lint looks for a branch a
    layout Transpose hides)."""
    options = branch_options(rules)
    weighted = rules.weighted_ops()
    through = rules.fusible_followers
    affine = options["through_constant_affine"]
    quantized, hops, t, path = False, 0, tensor, []
    while hops <= options["max_hops"]:
        node = index.producer.get(t)
        if index.consumer_count(t) != 1 or node is None:
            return [], quantized
        if through_qdq and node.op_type == ops.DEQUANTIZE:
            q = index.producer.get(node.input[0])
            if q is None or q.op_type != ops.QUANTIZE:
                return [], quantized
            quantized, t = True, q.input[0]
            continue
        path.append(node)
        if node.op_type in weighted and len(node.input) > 1 and (
                index.is_constant(node.input[1])
                or (through_qdq and _dequantized(index, node.input[1]))):
            return path, quantized
        live = index.live_inputs(node)
        if node.op_type in also_through and live:
            t, hops = node.input[0], hops + 1
            continue
        passes = node.op_type in through or (
            affine and node.op_type in ops.AFFINE_OPS and len(live) == 1)
        if not passes or not live:
            return [], quantized
        t, hops = node.input[live[0]], hops + 1
    return [], quantized


def _dequantized(index: GraphIndex, tensor: str) -> bool:
    node = index.producer.get(tensor)
    return node is not None and node.op_type == ops.DEQUANTIZE


def _kept_branch(index: GraphIndex, node, candidates: list[int], choice: str) -> int:
    if choice == "first":
        return candidates[0]
    if choice == "last":
        return candidates[-1]
    dist = {i: index.fork_distance(node.input[i]) for i in candidates}
    return max(candidates, key=lambda i: (dist[i], -i))


def residual_add(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                 rule: PatternRule) -> list[Proposal]:
    """Proposals for every Add/Sum of two or more live inputs."""
    out: list[Proposal | None] = []
    for node in index.nodes:
        if node.op_type not in rule.options["ops"]:
            continue
        live = index.live_inputs(node)
        if len(live) < 2 or len(live) != len([t for t in node.input if t]):
            continue  # a bias Add (one constant input) is not a residual junction
        branches = {i: weighted_branch(index, rules, node.input[i])[0] for i in live}
        candidates = [i for i in live if branches[i] is not None]
        layer = layer_of(layers, node)
        if not candidates:
            if rule.options["when_no_weighted_branch"] == "all":
                out.extend(slot_proposal(index, node, i, True, rules, rule.id,
                                         "no input comes straight from a weighted op: "
                                         "quantize all so the Add runs in INT8",
                                         PRIORITY_PATTERN, layer) for i in live)
            continue
        keep = _kept_branch(index, node, candidates, rule.options["branch_choice"])
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


KIND = PatternKind(
    "residual_add", residual_add,
    options={"ops": sorted(ops.ADD_OPS), "through_constant_affine": True, "max_hops": 8,
             "branch_choice": "farthest_from_fork", "when_no_weighted_branch": "all"},
    choices={"branch_choice": {"farthest_from_fork", "first", "last"},
             "when_no_weighted_branch": {"all", "none"}})
