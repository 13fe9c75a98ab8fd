"""The rule file's cost model applied to a plan: weighted layers on which INT8 buys nothing
measurable (a 10-way classifier head) leave their Q/DQ to the float remainder, each slot
recorded as a FloatDecision with the rule and the layer's size. A layer a spec or a custom
case decided is the user's choice and is not touched."""

from __future__ import annotations

import onnx

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.macs import LayerCost, layer_costs
from qdq_onnx.placement.plan import USER_RULES, FloatDecision, Placement
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.placement.rules.model import CostRule


def _matches(rule: CostRule, cost: LayerCost, total: int) -> bool:
    if cost.op not in rule.ops:
        return False
    checks = []
    if rule.out_channels_below is not None:
        checks.append(cost.out_channels is not None and cost.out_channels
                      < rule.out_channels_below)
    if rule.in_channels_below is not None:
        checks.append(cost.in_channels is not None and cost.in_channels
                      < rule.in_channels_below)
    if rule.macs_share_below is not None:
        checks.append(total > 0 and cost.macs / total < rule.macs_share_below)
    return bool(checks) and all(checks)


def _size(cost: LayerCost, total: int) -> str:
    share = f", {cost.macs / total:.2%} of the model's MACs" if total else ""
    return (f"{cost.out_channels} output channels, {cost.in_channels} input channels, "
            f"{cost.macs:,} MACs at batch 1{share}")


def apply_cost_rules(placements: list[Placement], left: list[FloatDecision],
                     model: onnx.ModelProto, index: GraphIndex, rules: RuleSet
                     ) -> tuple[list[Placement], list[FloatDecision]]:
    """`placements` without the layers a cost rule leaves float, and `left` with them."""
    if not rules.cost:
        return placements, left
    user = {d.consumer for d in [*placements, *left] if d.rule.startswith(USER_RULES)}
    weighted = {p.consumer for p in placements if p.kind == "weight"} - user
    if not weighted:
        return placements, left
    costs = layer_costs(model, index)
    total = sum(c.macs for c in costs.values())
    decided: dict[str, tuple[CostRule, LayerCost]] = {}
    for name in weighted:
        cost = costs.get(name)
        rule = next((r for r in rules.cost if cost and _matches(r, cost, total)), None)
        if rule is not None:
            decided[name] = (rule, cost)
    if not decided or not weighted - decided.keys():
        return placements, left  # a model of nothing but narrow layers: quantize them
    kept = [p for p in placements if p.consumer not in decided]
    moved = [FloatDecision(consumer=p.consumer, input=p.input, tensor=p.tensor, rule=r.id,
                           reason=f"{r.reason} ({_size(c, total)})", layer=p.layer)
             for p in placements if p.consumer in decided for r, c in [decided[p.consumer]]]
    return kept, left + moved
