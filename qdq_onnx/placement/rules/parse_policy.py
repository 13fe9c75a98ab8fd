"""The rule file's PTQ policy sections: `cost` (what INT8 buys nothing on),
`accuracy_guard` (the agreement a quantized model must keep with the float one) and
`scale_refinement` (calibrated ranges tuned on the model's outputs). A file without them has
none: the original toolkit's rules keep its exact behaviour."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from qdq_onnx.placement.rules.model import AccuracyGuardPolicy, CostRule, ScaleRefinementPolicy

_COST_KEYS = {"id", "name", "ops", "out_channels_below", "in_channels_below",
              "macs_share_below", "reason", "why"}
_CONDITIONS = ("out_channels_below", "in_channels_below", "macs_share_below")
_GUARD_KEYS = {"id", "name", "agreement", "sqnr_db", "min_gain_db", "samples", "max_trials",
               "reason", "why"}
_REFINE_KEYS = {"id", "name", "factors", "sweeps", "samples", "min_samples", "max_cost",
                "reason", "why"}


def _number(ctx: Any, obj: dict, key: str, what: str, integer: bool, low: float,
            high: float, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) \
            or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ctx.fail(obj, f"{what}: {key!r} must be {kind} in [{low:g}, {high:g}], got "
                            f"{value!r}")
    return value


def rule_items(ctx: Any, items: Any, keys: set[str], section: str
               ) -> Iterator[tuple[dict, str, str]]:
    """(item, rule id, its name in messages) of a section that is a list of rules, each
    checked for unknown keys and a unique id."""
    if not isinstance(items, list):
        raise ctx.fail(items, f"the {section} section must be a list of rules")
    for item in items:
        ctx.keys(item, keys, f"a {section} rule")
        rule_id = ctx.text(item, "id", f"a {section} rule")
        ctx.claim(item, rule_id)
        yield item, rule_id, f"{section} rule {rule_id}"


def cost_rules(ctx: Any, items: Any) -> list[CostRule]:
    """The `cost` section: a list of rules, each with at least one condition."""
    out = []
    for item, rule_id, what in rule_items(ctx, items, _COST_KEYS, "cost"):
        if not any(item.get(k) is not None for k in _CONDITIONS):
            raise ctx.fail(item, f"{what} needs a condition: one of {', '.join(_CONDITIONS)}")
        out.append(CostRule(
            id=rule_id, name=ctx.text(item, "name", what), ops=ctx.str_list(item, "ops", what),
            reason=ctx.text(item, "reason", what), why=str(item.get("why", "")).strip(),
            out_channels_below=_number(ctx, item, "out_channels_below", what, True, 1, 1e9),
            in_channels_below=_number(ctx, item, "in_channels_below", what, True, 1, 1e9),
            macs_share_below=_number(ctx, item, "macs_share_below", what, False, 0, 1)))
    return out


def accuracy_guard(ctx: Any, item: Any) -> AccuracyGuardPolicy:
    """The `accuracy_guard` section: one rule with its targets and budgets."""
    ctx.keys(item, _GUARD_KEYS, "the accuracy_guard section")
    rule_id = ctx.text(item, "id", "the accuracy_guard section")
    ctx.claim(item, rule_id)
    what = f"accuracy guard {rule_id}"
    return AccuracyGuardPolicy(
        id=rule_id, name=ctx.text(item, "name", what), reason=ctx.text(item, "reason", what),
        why=str(item.get("why", "")).strip(),
        agreement=_number(ctx, item, "agreement", what, False, 0, 1, 0.99),
        sqnr_db=_number(ctx, item, "sqnr_db", what, False, -100, 200, 20.0),
        min_gain_db=_number(ctx, item, "min_gain_db", what, False, 0, 100, 0.5),
        samples=_number(ctx, item, "samples", what, True, 1, 1e7, 128),
        max_trials=_number(ctx, item, "max_trials", what, True, 0, 1e6, 32))


def scale_refinement(ctx: Any, item: Any) -> ScaleRefinementPolicy:
    """The `scale_refinement` section: one rule with its factors and budgets."""
    ctx.keys(item, _REFINE_KEYS, "the scale_refinement section")
    rule_id = ctx.text(item, "id", "the scale_refinement section")
    ctx.claim(item, rule_id)
    what = f"scale refinement {rule_id}"
    default = ScaleRefinementPolicy(rule_id, "", "", "")
    factors = item.get("factors", list(default.factors))
    if not isinstance(factors, list) or not factors or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f)
            or not 0.05 <= f <= 20 or f == 1 for f in factors):
        raise ctx.fail(item, f"{what}: 'factors' must be a non-empty list of numbers in "
                             f"[0.05, 20] other than 1, got {factors!r}")
    samples = _number(ctx, item, "samples", what, True, 1, 1e7, default.samples)
    min_samples = _number(ctx, item, "min_samples", what, True, 1, 1e7, default.min_samples)
    if min_samples > samples:
        raise ctx.fail(item, f"{what}: 'min_samples' ({min_samples}) exceeds 'samples' "
                             f"({samples})")
    return ScaleRefinementPolicy(
        id=rule_id, name=ctx.text(item, "name", what), reason=ctx.text(item, "reason", what),
        why=str(item.get("why", "")).strip(),
        factors=tuple(float(f) for f in dict.fromkeys(factors)),
        sweeps=_number(ctx, item, "sweeps", what, True, 1, 100, default.sweeps),
        samples=samples, min_samples=min_samples,
        max_cost=float(_number(ctx, item, "max_cost", what, False, 0, 1e30, default.max_cost)))
