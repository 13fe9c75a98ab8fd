"""Planning: graph + rules + spec + cases -> placement plan. Pure: nothing is written."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import replace

import onnx

from qdq_onnx.errors import QdqError, SpecError
from qdq_onnx.graph.element_types import non_float_tensors
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.cases import BUILTIN_CASES, CustomQDQInsertionCase
from qdq_onnx.placement.config import ResolvedPlacement
from qdq_onnx.placement.cost import apply_cost_rules
from qdq_onnx.placement.fp8_policy import apply_fp8_policy
from qdq_onnx.placement.patterns import PATTERN_KINDS
from qdq_onnx.placement.plan import FloatDecision, Placement, PlacementPlan
from qdq_onnx.placement.proposals import PRIORITY_CASE, PRIORITY_OP_RULE, Proposal, resolve
from qdq_onnx.placement.rules import OpRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal
from qdq_onnx.placement.spec import QuantizationSpec, spec_proposals
from qdq_onnx.types.scheme import PER_TENSOR, Scheme, scheme_named


def model_fingerprint(graph: onnx.GraphProto) -> str:
    h = hashlib.sha256()
    for node in graph.node:
        h.update(f"{node.name}|{node.op_type}|{','.join(node.input)}\n".encode())
    return h.hexdigest()[:16]


def _op_rule_proposals(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                       rule: OpRule) -> list[Proposal]:
    out: list[Proposal] = []
    for node in index.nodes:
        if node.op_type not in rule.ops:
            continue
        owner = layers.owner.get(node.name)
        if rule.keras_classes is not None and layers.from_keras and (
                owner is None or owner.class_name not in rule.keras_classes):
            continue
        layer = owner.name if owner is not None and layers.layer_map is not None else None
        live = index.live_inputs(node)
        w = rule.weight_input
        if rule.live_weight == "skip" and "weight" in rule.inputs and w < len(node.input) \
                and node.input[w] and not index.is_constant(node.input[w]):
            continue  # an activation x activation product (attention) stays float
        slots: list[tuple[int, bool | None]] = []
        for want in rule.inputs:
            if want == "data":
                if live and live[0] == 0:
                    slots.append((0, False))
            elif want == "weight":
                w = rule.weight_input
                if w < len(node.input) and node.input[w]:
                    if index.is_constant(node.input[w]):
                        slots.append((w, True))
                    elif rule.live_weight == "activation":
                        slots.append((w, False))
            elif want == "live":
                slots.extend((i, False) for i in live)
            elif isinstance(want, int) and want in live:
                slots.append((want, False))
        for slot, as_weight in slots:
            p = slot_proposal(index, node, slot, True, rules, rule.id, rule.reason,
                              PRIORITY_OP_RULE, layer, as_weight=as_weight)
            if p is not None:
                out.append(p)
    return out


def resolve_cases(cases: Sequence[CustomQDQInsertionCase | str] | None
                  ) -> list[CustomQDQInsertionCase]:
    out: list[CustomQDQInsertionCase] = []
    for case in cases or []:
        if isinstance(case, str):
            cls = BUILTIN_CASES.get(case)
            if cls is None:
                close = difflib.get_close_matches(case, list(BUILTIN_CASES), n=2)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise SpecError(f"unknown built-in case {case!r}{hint}; known: "
                                f"{', '.join(BUILTIN_CASES)}")
            out.append(cls())
        elif isinstance(case, CustomQDQInsertionCase) or (
                hasattr(case, "case") and hasattr(case, "info")):
            out.append(case)
        else:
            raise SpecError(f"{case!r} is not a CustomQDQInsertionCase (needs info() and "
                            "case(model, quantization_spec))")
    return out


def plan_placement(model: onnx.ModelProto, placement: ResolvedPlacement) -> PlacementPlan:
    """Decide every Q/DQ pair for a prepared float model, each in its precision scheme.
    `model` and the spec are not modified."""
    rules, mode, spec = placement.rules, placement.mode, placement.spec
    case_objs = resolve_cases(placement.cases)
    user_spec = spec.copy() if spec is not None else None
    if mode == "partial" and not (user_spec and len(user_spec)) and not case_objs:
        raise SpecError("partial mode quantizes only the layers a spec or a custom case names; "
                        "give a quantization spec (or cases), or use mode 'full'")
    index = GraphIndex(model.graph)
    layers = LayerGraph(model, index)
    proposals: list[Proposal] = []
    if mode == "full":
        for rule in rules.op_rules:
            proposals.extend(_op_rule_proposals(index, layers, rules, rule))
        for kind, decl in PATTERN_KINDS.items():
            pattern = rules.pattern(kind)
            if pattern is not None:
                proposals.extend(decl.function(index, layers, rules, pattern))
    case_names = [case.__class__.__name__ for case in case_objs]
    proposals.extend(_case_proposals(case_objs, layers, rules, user_spec))
    if user_spec:
        proposals.extend(spec_proposals(user_spec, layers, rules))
    order = {n.name: i for i, n in enumerate(index.nodes)}
    placements, left, notes = resolve(proposals, order)
    placements, left = _keep_non_float(placements, left, model.graph, rules)
    placements, left = apply_cost_rules(placements, left, model, index, rules)
    placements = share_through_neutral(placements, index, rules)
    placements, scheme_notes = assign_schemes(placements, index, rules,
                                              placement.weight_scheme, placement.scheme)
    placements, fp8_notes = apply_fp8_policy(placements, index, rules)
    notes += scheme_notes + fp8_notes
    plan = PlacementPlan(placements=placements, left_float=left, mode=mode,
                         rules=rules.summary(), spec=user_spec.to_list() if user_spec else [],
                         cases=case_names, notes=notes,
                         model={"graph": model.graph.name, "nodes": len(index.nodes),
                                "fingerprint": model_fingerprint(model.graph),
                                "layer_map": layers.layer_map is not None})
    if not plan.placements:
        ops = sorted({n.op_type for n in index.nodes})
        raise QdqError(f"nothing to quantize: no op of this model matches a rule of "
                       f"{rules.name!r} or a spec entry (ops: {', '.join(ops[:12])}); check "
                       "the rules, the spec and the mode")
    return plan


def _case_proposals(case_objs: list, layers: LayerGraph, rules: RuleSet,
                    user_spec: QuantizationSpec | None) -> list[Proposal]:
    """The proposals of the custom cases' specs (entries the user's spec names excluded)."""
    out: list[Proposal] = []
    for case in case_objs:
        name = case.__class__.__name__
        try:
            returned = case.case(layers, user_spec.copy() if user_spec else None)
        except QdqError:
            raise
        except Exception as exc:
            raise QdqError(f"custom case {name} failed: {exc}") from exc
        if returned is None:
            continue
        if not isinstance(returned, QuantizationSpec):
            raise SpecError(f"custom case {name}.case() must return a QuantizationSpec, got "
                            f"{type(returned).__name__}")
        named = user_spec.named() if user_spec else set()
        merged = QuantizationSpec()
        merged.layers = [e for e in returned.layers if e.name not in named]
        out.extend(spec_proposals(merged, layers, rules, rule_id=f"CASE:{name}",
                                  case_priority=PRIORITY_CASE))
    return out


def _keep_non_float(placements: list[Placement], left: list[FloatDecision],
                    graph: onnx.GraphProto, rules: RuleSet
                    ) -> tuple[list[Placement], list[FloatDecision]]:
    """Placements on integer or boolean tensors (token ids, shape arithmetic, masks) left
    float by the rule file's never rule for them: QuantizeLinear takes floating point."""
    rule = rules.never_rule_for_tensors("non-float")
    if rule is None:
        return placements, left
    non_float = non_float_tensors(graph)
    kept = [p for p in placements if p.tensor not in non_float]
    left = left + [FloatDecision(consumer=p.consumer, input=p.input, tensor=p.tensor,
                                 rule=rule.id, reason=rule.reason, layer=p.layer)
                   for p in placements if p.tensor in non_float]
    return kept, left


def share_through_neutral(placements: list[Placement], index: GraphIndex,
                          rules: RuleSet, max_hops: int = 16) -> list[Placement]:
    """An activation reached only through precision-neutral ops (MaxPool, Reshape, Transpose,
    Concat, ... from the rule file's taxonomy) from quantized activations of one scale group
    (one tensor, or the inputs of a shared-scale Concat) joins that group: TensorRT moves
    Q/DQ through such ops, and a second scale there would be a re-quantization (lint
    TRT-L013). A Concat that appends float values is not followed: new values enter."""
    key_of = {p.tensor: p.scale_group or p.tensor for p in placements
              if p.kind == "activation"}
    neutral = rules.precision_neutral

    def source(tensor: str) -> str | None:
        found = index.neutral_sources(tensor, neutral, key_of.__contains__, max_hops)
        keys = {key_of[t] for t, _ in found or ()}
        return found[0][0] if len(keys) == 1 else None

    out = []
    for p in placements:
        if p.kind == "activation" and p.scale_group is None:
            src = source(p.tensor)
            if src is not None:
                key_of[p.tensor] = key_of[src]
                p = replace(p, scale_group=key_of[src],
                            reason=f"{p.reason} (scale shared with {src} through "
                                   "precision-neutral ops: no re-quantization)")
        out.append(p)
    return out


def assign_schemes(placements: list[Placement], index: GraphIndex, rules: RuleSet,
                   weight_scheme: Scheme | None = None, scheme_all: Scheme | None = None
                   ) -> tuple[list[Placement], list[str]]:
    """Each placement's precision: `scheme_all` when given, else the op rule of its
    consumer's op (else the rule file's default); `weight_scheme` for every weight when
    given. The inputs sharing one scale
    share one Q/DQ pair, so they take the scheme of the group's first member (a note says
    where a member's rule wanted another)."""
    out, notes, group_scheme = [], [], {}
    for p in placements:
        op = index.by_name[p.consumer].op_type if p.consumer in index.by_name else None
        scheme = scheme_all.name if scheme_all is not None else rules.scheme_for(op)
        if p.kind == "weight" and weight_scheme is not None:
            scheme = weight_scheme.name
        if p.kind == "activation":
            key = p.scale_group or p.tensor
            chosen = group_scheme.setdefault(key, scheme)
            if chosen != scheme:
                notes.append(f"{p.consumer}[{p.input}]: shares the scale of {key} and so its "
                             f"scheme {chosen} (its rule gives {scheme})")
            scheme = chosen
        if p.kind == "weight" and scheme_named(scheme).weight_axis == PER_TENSOR:
            p = replace(p, axis=None)  # the scheme's weights take one scale
        out.append(replace(p, scheme=scheme))
    return out, notes


def check_plan_matches(plan: PlacementPlan, model: onnx.ModelProto) -> None:
    """Refuse a saved plan made for another graph."""
    index = GraphIndex(model.graph)
    for p in plan.placements:
        node = index.by_name.get(p.consumer)
        if node is None or p.input >= len(node.input) or node.input[p.input] != p.tensor:
            raise QdqError(f"the plan does not match this model: {p.consumer}[{p.input}] "
                           f"({p.tensor}) is not in the graph (was the plan made for another "
                           "model?)")
