"""Validating a parsed rule document into a RuleSet: one function per section, errors with
file:line. Pattern options are validated against the declaration each pattern kind makes
next to its function (`qdq_onnx.placement.patterns`)."""

from __future__ import annotations

import difflib
from typing import Any

from qdq_onnx.errors import QdqError
from qdq_onnx.files.yaml_lines import where
from qdq_onnx.placement.rules.model import (
    LintRule,
    NeverRule,
    OpRule,
    PatternRule,
    PrecisionGuard,
    PrecisionPolicy,
    RuleSet,
    Taxonomy,
    WeightAxis,
)
from qdq_onnx.types.scheme import DEFAULT_SCHEME, scheme_named

_TOP_KEYS = {"schema", "name", "description", "scheme", "op_rules", "never", "taxonomy",
             "patterns", "lint", "precision", "cost", "accuracy_guard", "scale_refinement",
             "fp8"}
_OP_KEYS = {"id", "name", "ops", "inputs", "weight_input", "weight_axis", "keras_classes",
            "live_weight", "scheme", "reason", "why"}
_NEVER_KEYS = {"id", "name", "ops", "tensors", "reason", "why"}
_TENSOR_KINDS = ("non-float",)
_TAXONOMY_KEYS = {"fusible_followers", "precision_neutral"}
_PATTERN_KEYS = {"id", "name", "enabled", "reason", "why"}
_LINT_KEYS = {"id", "name", "severity", "reason", "why"}
_INPUT_WORDS = {"data", "weight", "live"}
_PRECISION_KEYS = {"high_precision", "guards"}
_GUARD_KEYS = {"id", "name", "kind", "types", "limit", "ops", "reason", "why"}
GUARD_KINDS = ("activation_max", "activation_subnormal", "weight_max", "weight_subnormal",
               "reduction", "no_low_precision_type")
_NEEDS_LIMIT = {"activation_max", "weight_max", "reduction"}
_REMAINDER_TYPES = ("fp16", "bf16", "fp32")


class _Ctx:
    """The file being parsed and the rule ids seen so far (ids are unique per file)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: dict[str, str] = {}

    def fail(self, obj: Any, message: str) -> QdqError:
        return QdqError(f"{where(self.source, obj)}: {message}")

    def claim(self, obj: dict, rule_id: str) -> None:
        if rule_id in self.ids:
            raise self.fail(obj, f"rule id {rule_id!r} is used twice (first at "
                                 f"{self.ids[rule_id]})")
        self.ids[rule_id] = where(self.source, obj)

    def keys(self, obj: Any, allowed: set[str], what: str) -> None:
        if not isinstance(obj, dict):
            raise self.fail(obj, f"{what} must be a mapping, got {type(obj).__name__}")
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(obj, f"unknown key {key!r} in {what}{hint}")

    def text(self, obj: dict, key: str, what: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(obj, f"{what} needs a non-empty {key!r}")
        return value.strip()

    def scheme(self, obj: dict, what: str, default: str | None) -> str | None:
        """The `scheme` key of `obj` (a scheme name), checked."""
        value = obj.get("scheme", default)
        if value is None:
            return None
        try:
            return scheme_named(value).name
        except QdqError as exc:
            raise self.fail(obj, f"{what}: {exc}") from exc

    def str_list(self, obj: dict, key: str, what: str, required: bool = True) -> tuple:
        value = obj.get(key)
        if value is None and not required:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(obj, f"{what}: {key!r} must be a list of strings")
        return tuple(value)


def parse_rules(raw: Any, source: str = "<rules>", sha256: str = "",
                default_taxonomy: Taxonomy | None = None,
                default_precision: PrecisionPolicy | None = None) -> RuleSet:
    """Validate a parsed rule document and build a RuleSet (errors carry file:line).

    A file without a `taxonomy` (`precision`) section takes `default_taxonomy`
    (`default_precision`): the bundled TensorRT rules' when loaded through `load_rules`."""
    ctx = _Ctx(source)
    ctx.keys(raw, _TOP_KEYS, "the rule file")
    if raw.get("schema") != 1:
        raise ctx.fail(raw, f"unsupported rule-file schema {raw.get('schema')!r} (this "
                            "version reads schema: 1)")
    rules = RuleSet(name=ctx.text(raw, "name", "the rule file"),
                    description=str(raw.get("description", "")).strip(), path=source,
                    sha256=sha256,
                    scheme=ctx.scheme(raw, "the rule file", DEFAULT_SCHEME))
    rules.op_rules = _op_rules(ctx, raw.get("op_rules") or [])
    rules.never = _never_rules(ctx, raw.get("never") or [], rules.op_rules)
    if "taxonomy" in raw:
        rules.taxonomy = _taxonomy(ctx, raw["taxonomy"])
    elif default_taxonomy is not None:
        rules.taxonomy = default_taxonomy
    rules.patterns = _patterns(ctx, raw, raw.get("patterns") or {})
    rules.lint = _lint(ctx, raw.get("lint") or [])
    if "precision" in raw:
        rules.precision = _precision(ctx, raw["precision"])
    elif default_precision is not None:
        rules.precision = default_precision
    from qdq_onnx.placement.rules import parse_policy

    rules.cost = parse_policy.cost_rules(ctx, raw.get("cost") or [])
    if raw.get("accuracy_guard") is not None:
        rules.accuracy_guard = parse_policy.accuracy_guard(ctx, raw["accuracy_guard"])
    if raw.get("scale_refinement") is not None:
        rules.scale_refinement = parse_policy.scale_refinement(ctx, raw["scale_refinement"])
    from qdq_onnx.placement.rules.fp8 import fp8_rules

    rules.fp8 = fp8_rules(ctx, raw.get("fp8") or [])
    return rules


def _axis(ctx: _Ctx, obj: dict, value: Any) -> WeightAxis:
    if isinstance(value, int) and not isinstance(value, bool):
        return WeightAxis(fixed=value)
    if isinstance(value, dict) and "attribute" in value and "values" in value:
        values = value["values"]
        if not isinstance(values, dict) or not values:
            raise ctx.fail(obj, "weight_axis.values must map attribute values to axes")
        pairs = tuple((int(k), int(v)) for k, v in values.items())
        default = value.get("default")
        return WeightAxis(attribute=str(value["attribute"]), by_value=pairs,
                          default=None if default is None else int(default))
    raise ctx.fail(obj, "weight_axis must be an integer or "
                        "{attribute: NAME, values: {VALUE: AXIS}, default: VALUE}")


def _op_rule(ctx: _Ctx, item: Any) -> OpRule:
    ctx.keys(item, _OP_KEYS, "an op rule")
    rule_id = ctx.text(item, "id", "an op rule")
    ctx.claim(item, rule_id)
    inputs = item.get("inputs", ["data"])
    if not isinstance(inputs, list) or not inputs:
        raise ctx.fail(item, f"op rule {rule_id}: 'inputs' must be a non-empty list")
    for value in inputs:
        if not (value in _INPUT_WORDS or (isinstance(value, int) and value >= 0)):
            raise ctx.fail(item, f"op rule {rule_id}: input {value!r} is not one of data, "
                                 "weight, live or a non-negative index")
    axis = item.get("weight_axis")
    weight_axis = _axis(ctx, item, axis) if axis is not None else None
    if "weight" in inputs and weight_axis is None:
        raise ctx.fail(item, f"op rule {rule_id}: quantizes 'weight' but gives no "
                             "weight_axis")
    live_weight = item.get("live_weight", "activation")
    if live_weight not in ("activation", "skip"):
        raise ctx.fail(item, f"op rule {rule_id}: live_weight must be activation or skip")
    keras = item.get("keras_classes")
    return OpRule(
        id=rule_id, name=ctx.text(item, "name", f"op rule {rule_id}"),
        ops=ctx.str_list(item, "ops", f"op rule {rule_id}"), inputs=tuple(inputs),
        weight_input=int(item.get("weight_input", 1)), weight_axis=weight_axis,
        keras_classes=None if keras is None else ctx.str_list(item, "keras_classes",
                                                              rule_id),
        live_weight=live_weight, reason=ctx.text(item, "reason", f"op rule {rule_id}"),
        why=str(item.get("why", "")).strip(),
        scheme=ctx.scheme(item, f"op rule {rule_id}", None))


def _op_rules(ctx: _Ctx, items: list) -> list[OpRule]:
    out: list[OpRule] = []
    owner: dict[str, str] = {}
    for item in items:
        rule = _op_rule(ctx, item)
        for op in rule.ops:
            if op in owner:
                raise ctx.fail(item, f"op {op!r} already has a rule ({owner[op]})")
            owner[op] = rule.id
        out.append(rule)
    return out


def _never_rules(ctx: _Ctx, items: list, op_rules: list[OpRule]) -> list[NeverRule]:
    quantized = {op: r.id for r in op_rules for op in r.ops}
    out = []
    for item in items:
        ctx.keys(item, _NEVER_KEYS, "a never rule")
        rule_id = ctx.text(item, "id", "a never rule")
        ctx.claim(item, rule_id)
        tensors = item.get("tensors")
        if tensors is not None and tensors not in _TENSOR_KINDS:
            raise ctx.fail(item, f"never rule {rule_id}: 'tensors' must be one of "
                                 f"{', '.join(_TENSOR_KINDS)}")
        ops = ctx.str_list(item, "ops", f"never rule {rule_id}", required=tensors is None)
        for op in ops:
            if op in quantized:
                raise ctx.fail(item, f"op {op!r} is both quantized ({quantized[op]}) and "
                                     f"never quantized ({rule_id})")
        out.append(NeverRule(id=rule_id, name=ctx.text(item, "name", f"never rule {rule_id}"),
                             ops=ops, reason=ctx.text(item, "reason", f"never rule {rule_id}"),
                             why=str(item.get("why", "")).strip(), tensors=tensors))
    return out


def _taxonomy(ctx: _Ctx, item: Any) -> Taxonomy:
    ctx.keys(item, _TAXONOMY_KEYS, "the taxonomy")
    return Taxonomy(
        fusible_followers=frozenset(ctx.str_list(item, "fusible_followers", "taxonomy")),
        precision_neutral=frozenset(ctx.str_list(item, "precision_neutral", "taxonomy")),
        source=where(ctx.source, item))


def _pattern_option(ctx: _Ctx, item: dict, kind: str, key: str, default: Any,
                    choices: set | None) -> Any:
    value = item[key]
    if isinstance(default, list) and default and all(isinstance(d, int) for d in default):
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ctx.fail(item, f"pattern {kind}: {key} must be a list of integers")
    elif isinstance(default, list):
        value = list(ctx.str_list(item, key, f"pattern {kind}"))
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ctx.fail(item, f"pattern {kind}: {key} must be true or false")
    elif isinstance(default, int) and not isinstance(value, int):
        raise ctx.fail(item, f"pattern {kind}: {key} must be an integer")
    if choices and value not in choices:
        raise ctx.fail(item, f"pattern {kind}: {key} must be one of "
                             f"{', '.join(sorted(choices))}, got {value!r}")
    return value


def _patterns(ctx: _Ctx, raw: dict, patterns: Any) -> dict[str, PatternRule]:
    from qdq_onnx.placement.patterns import PATTERN_KINDS

    if not isinstance(patterns, dict):
        raise ctx.fail(raw, "'patterns' must be a mapping of pattern kind to settings")
    out: dict[str, PatternRule] = {}
    for kind, item in patterns.items():
        decl = PATTERN_KINDS.get(kind)
        if decl is None:
            close = difflib.get_close_matches(str(kind), list(PATTERN_KINDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ctx.fail(patterns, f"unknown pattern {kind!r}{hint}; known: "
                                     f"{', '.join(PATTERN_KINDS)}")
        ctx.keys(item, _PATTERN_KEYS | set(decl.options), f"pattern {kind}")
        rule_id = ctx.text(item, "id", f"pattern {kind}")
        ctx.claim(item, rule_id)
        options = dict(decl.options)
        for key, default in decl.options.items():
            if key in item:
                options[key] = _pattern_option(ctx, item, kind, key, default,
                                               decl.choices.get(key))
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ctx.fail(item, f"pattern {kind}: enabled must be true or false")
        out[kind] = PatternRule(kind=kind, id=rule_id,
                                name=ctx.text(item, "name", f"pattern {kind}"),
                                enabled=enabled, options=options,
                                reason=ctx.text(item, "reason", f"pattern {kind}"),
                                why=str(item.get("why", "")).strip())
    return out


def _lint(ctx: _Ctx, items: list) -> dict[str, LintRule]:
    out: dict[str, LintRule] = {}
    for item in items:
        ctx.keys(item, _LINT_KEYS, "a lint check")
        rule_id = ctx.text(item, "id", "a lint check")
        ctx.claim(item, rule_id)
        severity = item.get("severity", "warning")
        if severity not in ("error", "warning"):
            raise ctx.fail(item, f"lint check {rule_id}: severity must be error or warning")
        name = ctx.text(item, "name", f"lint check {rule_id}")
        out[name] = LintRule(id=rule_id, name=name, severity=severity,
                             reason=ctx.text(item, "reason", f"lint check {rule_id}"),
                             why=str(item.get("why", "")).strip())
    return out


def _precision(ctx: _Ctx, item: Any) -> PrecisionPolicy:
    ctx.keys(item, _PRECISION_KEYS, "the precision section")
    default = item.get("high_precision", "fp16")
    if default not in _REMAINDER_TYPES:
        raise ctx.fail(item, f"precision: high_precision must be one of "
                             f"{', '.join(_REMAINDER_TYPES)}, got {default!r}")
    guards = []
    for g in item.get("guards") or []:
        ctx.keys(g, _GUARD_KEYS, "a precision guard")
        rule_id = ctx.text(g, "id", "a precision guard")
        ctx.claim(g, rule_id)
        kind = g.get("kind")
        if kind not in GUARD_KINDS:
            raise ctx.fail(g, f"precision guard {rule_id}: kind must be one of "
                              f"{', '.join(GUARD_KINDS)}, got {kind!r}")
        types = ctx.str_list(g, "types", f"precision guard {rule_id}")
        bad = [t for t in types if t not in _REMAINDER_TYPES[:2]]
        if bad:
            raise ctx.fail(g, f"precision guard {rule_id}: types must be fp16 and/or bf16, "
                              f"got {bad[0]!r}")
        limit = g.get("limit")
        if (kind in _NEEDS_LIMIT) != (limit is not None) or (
                limit is not None and not (isinstance(limit, (int, float)) and limit > 0)):
            wanted = "needs a positive limit" if kind in _NEEDS_LIMIT else "takes no limit"
            raise ctx.fail(g, f"precision guard {rule_id}: kind {kind} {wanted}")
        guards.append(PrecisionGuard(
            id=rule_id, name=ctx.text(g, "name", f"precision guard {rule_id}"), kind=kind,
            types=types, limit=None if limit is None else float(limit),
            ops=ctx.str_list(g, "ops", f"precision guard {rule_id}", required=False),
            reason=ctx.text(g, "reason", f"precision guard {rule_id}"),
            why=str(g.get("why", "")).strip()))
    return PrecisionPolicy(high_precision=default, guards=tuple(guards))
