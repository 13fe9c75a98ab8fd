"""The rule file's FP8 policy applied to a plan made in FP8 (`insert --dtype fp8`): each
weighted layer takes the scheme of the first `fp8` rule matching its op and shape (FP8 for
GEMMs, INT8 for depthwise, grouped, narrow and large-kernel convolutions), recorded in its
placements' rule and reason. One Q/DQ pair has one type, so the layers reading an input
pair an INT8 layer reads take INT8 too (with the layer that decided it named)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.placement.plan import Placement
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.placement.rules.fp8 import Fp8Rule, LayerShape, layer_shape
from qdq_onnx.placement.slots import weight_axis
from qdq_onnx.types.scheme import PER_TENSOR, scheme_named


def node_shape(index: GraphIndex, node: onnx.NodeProto) -> LayerShape:
    """The channel counts, group and kernel size an FP8 rule reads of `node`."""
    weight = index.constant_shape(node.input[1]) if len(node.input) > 1 else None
    if ops.is_convolution(node.op_type):
        return layer_shape(node.op_type, weight, int(attribute(node, "group", 1) or 1),
                           node.op_type == ops.CONV_TRANSPOSE)
    if weight is not None and len(weight) >= 2:
        k, n = weight[-2], weight[-1]
        if node.op_type == ops.GEMM and attribute(node, "transB", 0):
            k, n = n, k
        return layer_shape(node.op_type, (k, n), 1, False)
    return LayerShape(node.op_type, None, None)


def _decisions(placements: list[Placement], index: GraphIndex, rules: RuleSet
               ) -> dict[str, tuple[Fp8Rule, LayerShape]]:
    """Consumer -> (the first FP8 rule matching it, its shape), for the FP8 consumers."""
    out: dict[str, tuple[Fp8Rule, LayerShape]] = {}
    for p in placements:
        node = index.by_name.get(p.consumer)
        if p.consumer in out or node is None or not p.quantization.is_float:
            continue
        shape = node_shape(index, node)
        rule = next((r for r in rules.fp8 if r.matches(shape)), None)
        if rule is not None:
            out[p.consumer] = (rule, shape)
    return out


def _fallbacks(placements: list[Placement], decided: dict[str, tuple[Fp8Rule, LayerShape]]
               ) -> dict[str, str]:
    """Consumer -> the consumer whose rule makes it take a non-FP8 scheme: itself, or the
    layer it shares an input Q/DQ pair with (followed transitively)."""
    groups: dict[str, set[str]] = {}
    of_consumer: dict[str, set[str]] = {}
    for p in placements:
        if p.kind == "activation" and p.quantization.is_float:
            key = p.scale_group or p.tensor
            groups.setdefault(key, set()).add(p.consumer)
            of_consumer.setdefault(p.consumer, set()).add(key)
    cause = {c: c for c, (rule, _) in decided.items() if not scheme_named(rule.scheme).is_float}
    todo = list(cause)
    while todo:
        consumer = todo.pop()
        for key in sorted(of_consumer.get(consumer, ())):
            for other in sorted(groups[key]):
                if other not in cause:
                    cause[other] = cause[consumer]
                    todo.append(other)
    return cause


def apply_fp8_policy(placements: list[Placement], index: GraphIndex, rules: RuleSet
                     ) -> tuple[list[Placement], list[str]]:
    """`placements` with the FP8 policy's schemes, and a note counting its decisions. A
    plan with no FP8 placement, or a rule file without an `fp8` section, is returned as
    it is."""
    if not rules.fp8 or not any(p.quantization.is_float for p in placements):
        return placements, []
    decided = _decisions(placements, index, rules)
    cause = _fallbacks(placements, decided)
    out = []
    for p in placements:
        if not p.quantization.is_float:
            out.append(p)
        elif p.consumer in cause:
            out.append(_fallen_back(p, index, rules, decided, cause[p.consumer]))
        elif p.consumer in decided:
            rule, shape = decided[p.consumer]
            out.append(replace(p, rule=f"{p.rule},{rule.id}", reason=(
                f"{p.reason}; {rule.scheme.upper()} by {rule.id} ({rule.name}): {rule.reason}"
                f" [{shape.describe()}]")))
        else:
            out.append(p)
    return out, _summary(out, decided, cause)


def _fallen_back(p: Placement, index: GraphIndex, rules: RuleSet,
                 decided: dict[str, tuple[Fp8Rule, LayerShape]], by: str) -> Placement:
    rule, shape = decided[by]
    scheme = scheme_named(rule.scheme)
    axis = p.axis
    if p.kind == "weight":  # the fallback scheme's weight layout (INT8: per channel)
        axis = None if scheme.weight_axis == PER_TENSOR else weight_axis(
            index, index.by_name[p.consumer], p.input, rules)
    if by == p.consumer:
        why = (f"{scheme.name.upper()}, not FP8, by {rule.id} ({rule.name}): {rule.reason} "
               f"[{shape.describe()}]")
    else:
        why = (f"{scheme.name.upper()}, not FP8, by {rule.id} through {by}: it shares an "
               f"input's Q/DQ pair with {by}, which {rule.id} keeps {scheme.name.upper()} "
               "(one pair has one type)")
    return replace(p, scheme=scheme.name, axis=axis, rule=f"{p.rule},{rule.id}",
                   reason=f"{p.reason}; {why}")


def _summary(placements: list[Placement], decided: dict[str, tuple[Fp8Rule, LayerShape]],
             cause: dict[str, str]) -> list[str]:
    weighted = {p.consumer: p.scheme for p in placements if p.kind == "weight"}
    if not weighted:
        return []
    per_scheme = Counter(weighted.values())
    by_rule = Counter(decided[cause[c]][0].id for c in weighted if c in cause)
    fallen = ", ".join(f"{rule} {n}" for rule, n in sorted(by_rule.items()))
    counts = ", ".join(f"{n} {s.upper()}" for s, n in sorted(per_scheme.items()))
    return [f"FP8 policy: {counts} of {len(weighted)} weighted layers"
            + (f" (fallback by {fallen})" if fallen else "")]
