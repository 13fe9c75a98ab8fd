"""Rule files: the placement policy as data (`rules/*.yaml`), loaded and validated.

A rule file holds op rules (which inputs of which op types get Q/DQ, and the per-channel
weight axis), a list of ops never quantized, and switches/options for graph-pattern rules.
Every rule has a stable id, a short name, a one-line reason and a longer why.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdq_onnx.errors import QdqError
from qdq_onnx.policy.yaml_lines import load_yaml, where

PATTERN_KINDS = ("residual_add", "batchnorm_input", "maxpool", "se_multiply", "concat")

_TOP_KEYS = {"schema", "name", "description", "op_rules", "never", "patterns", "lint"}
_LINT_KEYS = {"id", "name", "severity", "reason", "why"}
_OP_KEYS = {"id", "name", "ops", "inputs", "weight_input", "weight_axis", "keras_classes",
            "live_weight", "reason", "why"}
_NEVER_KEYS = {"id", "name", "ops", "reason", "why"}
_PATTERN_KEYS = {"id", "name", "enabled", "reason", "why"}
_PATTERN_OPTIONS: dict[str, dict[str, Any]] = {
    "residual_add": {"ops": ["Add", "Sum"], "through": [], "through_constant_affine": True,
                     "max_hops": 8, "branch_choice": "farthest_from_fork",
                     "when_no_weighted_branch": "all"},
    "batchnorm_input": {"ops": ["BatchNormalization"]},
    "maxpool": {"mode": "branch", "feeds": ["Add", "Sum", "Concat"]},
    "se_multiply": {"gate_ops": ["Sigmoid", "HardSigmoid"], "through": [], "max_hops": 6},
    "concat": {"mode": "none"},
}
_CHOICES = {
    ("residual_add", "branch_choice"): {"farthest_from_fork", "first", "last"},
    ("residual_add", "when_no_weighted_branch"): {"all", "none"},
    ("maxpool", "mode"): {"all", "branch", "none"},
    ("concat", "mode"): {"all", "shared", "none"},
}
_INPUT_WORDS = {"data", "weight", "live"}


@dataclass(frozen=True)
class WeightAxis:
    """Per-channel axis of a weight: fixed, or chosen by a node attribute (Gemm transB)."""

    fixed: int | None = None
    attribute: str | None = None
    by_value: tuple[tuple[int, int], ...] = ()
    default: int | None = None

    def resolve(self, node_attrs: dict[str, Any]) -> int:
        if self.attribute is None:
            assert self.fixed is not None
            return self.fixed
        value = node_attrs.get(self.attribute, self.default_value)
        for v, axis in self.by_value:
            if v == value:
                return axis
        raise QdqError(f"no weight axis for {self.attribute}={value!r}")

    @property
    def default_value(self) -> int:
        return 0 if self.default is None else self.default


@dataclass(frozen=True)
class OpRule:
    id: str
    name: str
    ops: tuple[str, ...]
    inputs: tuple[str | int, ...]
    weight_input: int
    weight_axis: WeightAxis | None
    keras_classes: tuple[str, ...] | None
    live_weight: str  # what to do when the weight input is computed at run time
    reason: str
    why: str


@dataclass(frozen=True)
class NeverRule:
    id: str
    name: str
    ops: tuple[str, ...]
    reason: str
    why: str


@dataclass(frozen=True)
class PatternRule:
    kind: str
    id: str
    name: str
    enabled: bool
    options: dict[str, Any]
    reason: str
    why: str


@dataclass(frozen=True)
class LintRule:
    id: str
    name: str
    severity: str  # error | warning
    reason: str
    why: str


@dataclass
class RuleSet:
    name: str
    description: str
    path: str
    sha256: str
    op_rules: list[OpRule] = field(default_factory=list)
    never: list[NeverRule] = field(default_factory=list)
    patterns: dict[str, PatternRule] = field(default_factory=dict)
    lint: dict[str, LintRule] = field(default_factory=dict)  # by name

    def op_rule_for(self, op_type: str) -> OpRule | None:
        for rule in self.op_rules:
            if op_type in rule.ops:
                return rule
        return None

    def never_rule_for(self, op_type: str) -> NeverRule | None:
        for rule in self.never:
            if op_type in rule.ops:
                return rule
        return None

    def pattern(self, kind: str) -> PatternRule | None:
        rule = self.patterns.get(kind)
        return rule if rule is not None and rule.enabled else None

    def all_rules(self) -> list[OpRule | NeverRule | PatternRule | LintRule]:
        return [*self.op_rules, *self.never, *self.patterns.values(), *self.lint.values()]

    def by_id(self, rule_id: str) -> OpRule | NeverRule | PatternRule | None:
        for rule in self.all_rules():
            if rule.id == rule_id:
                return rule
        return None

    def summary(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256}


def rules_dir() -> Path:
    """The folder holding the bundled rule files (repository checkout or installed share/)."""
    here = Path(__file__).resolve().parents[2] / "rules"
    if (here / "tensorrt.yaml").is_file():
        return here
    return Path(sys.prefix) / "share" / "qdq-onnx" / "rules"


def bundled_rule_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(rules_dir().glob("*.yaml"))}


def load_rules(path_or_name: str | Path | None = None) -> RuleSet:
    """Load a rule file by path, or a bundled one by name ("tensorrt", "nvidia-tf-toolkit")."""
    if path_or_name is None:
        path_or_name = "tensorrt"
    p = Path(path_or_name)
    if not p.is_file():
        bundled = bundled_rule_files()
        if str(path_or_name) in bundled:
            p = bundled[str(path_or_name)]
        else:
            close = difflib.get_close_matches(str(path_or_name), list(bundled), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise QdqError(
                f"rule file {str(path_or_name)!r} not found{hint}; bundled rule sets: "
                f"{', '.join(bundled)}"
            )
    raw = load_yaml(p)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return parse_rules(raw, source=str(p), sha256=digest)


def _fail(source: str, obj: Any, message: str) -> QdqError:
    return QdqError(f"{where(source, obj)}: {message}")


def _check_keys(source: str, obj: Any, allowed: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(source, obj, f"{what} must be a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(source, obj, f"unknown key {key!r} in {what}{hint}")


def _require_text(source: str, obj: dict, key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, obj, f"{what} needs a non-empty {key!r}")
    return value.strip()


def _str_list(source: str, obj: dict, key: str, what: str, required: bool = True) -> tuple:
    value = obj.get(key)
    if value is None and not required:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, obj, f"{what}: {key!r} must be a list of strings")
    return tuple(value)


def _parse_axis(source: str, obj: dict, value: Any) -> WeightAxis:
    if isinstance(value, int) and not isinstance(value, bool):
        return WeightAxis(fixed=value)
    if isinstance(value, dict) and "attribute" in value and "values" in value:
        values = value["values"]
        if not isinstance(values, dict) or not values:
            raise _fail(source, obj, "weight_axis.values must map attribute values to axes")
        pairs = tuple((int(k), int(v)) for k, v in values.items())
        default = value.get("default")
        return WeightAxis(attribute=str(value["attribute"]), by_value=pairs,
                          default=None if default is None else int(default))
    raise _fail(source, obj, "weight_axis must be an integer or "
                "{attribute: NAME, values: {VALUE: AXIS}, default: VALUE}")


def parse_rules(raw: Any, source: str = "<rules>", sha256: str = "") -> RuleSet:
    """Validate a parsed rule document and build a RuleSet (errors carry file:line)."""
    _check_keys(source, raw, _TOP_KEYS, "the rule file")
    if raw.get("schema") != 1:
        raise _fail(source, raw, f"unsupported rule-file schema {raw.get('schema')!r} "
                    "(this version reads schema: 1)")
    rules = RuleSet(name=_require_text(source, raw, "name", "the rule file"),
                    description=str(raw.get("description", "")).strip(),
                    path=source, sha256=sha256)
    seen_ids: dict[str, str] = {}

    def claim(rule_obj: dict, rule_id: str) -> None:
        if rule_id in seen_ids:
            raise _fail(source, rule_obj, f"rule id {rule_id!r} is used twice "
                        f"(first at {seen_ids[rule_id]})")
        seen_ids[rule_id] = where(source, rule_obj)

    seen_ops: dict[str, str] = {}
    for item in raw.get("op_rules") or []:
        _check_keys(source, item, _OP_KEYS, "an op rule")
        rule_id = _require_text(source, item, "id", "an op rule")
        claim(item, rule_id)
        ops = _str_list(source, item, "ops", f"op rule {rule_id}")
        for op in ops:
            if op in seen_ops:
                raise _fail(source, item, f"op {op!r} already has a rule ({seen_ops[op]})")
            seen_ops[op] = rule_id
        inputs = item.get("inputs", ["data"])
        if not isinstance(inputs, list) or not inputs:
            raise _fail(source, item, f"op rule {rule_id}: 'inputs' must be a non-empty list")
        for value in inputs:
            ok = value in _INPUT_WORDS or (isinstance(value, int) and value >= 0)
            if not ok:
                raise _fail(source, item, f"op rule {rule_id}: input {value!r} is not one of "
                            f"data, weight, live or a non-negative index")
        axis = item.get("weight_axis")
        weight_axis = _parse_axis(source, item, axis) if axis is not None else None
        if "weight" in inputs and weight_axis is None:
            raise _fail(source, item, f"op rule {rule_id}: quantizes 'weight' but gives no "
                        "weight_axis")
        live_weight = item.get("live_weight", "activation")
        if live_weight not in ("activation", "skip"):
            raise _fail(source, item, f"op rule {rule_id}: live_weight must be activation or "
                        "skip")
        keras = item.get("keras_classes")
        rules.op_rules.append(OpRule(
            id=rule_id, name=_require_text(source, item, "name", f"op rule {rule_id}"),
            ops=ops, inputs=tuple(inputs), weight_input=int(item.get("weight_input", 1)),
            weight_axis=weight_axis,
            keras_classes=None if keras is None else _str_list(source, item, "keras_classes",
                                                              rule_id),
            live_weight=live_weight,
            reason=_require_text(source, item, "reason", f"op rule {rule_id}"),
            why=str(item.get("why", "")).strip()))
    for item in raw.get("never") or []:
        _check_keys(source, item, _NEVER_KEYS, "a never rule")
        rule_id = _require_text(source, item, "id", "a never rule")
        claim(item, rule_id)
        ops = _str_list(source, item, "ops", f"never rule {rule_id}")
        for op in ops:
            if op in seen_ops:
                raise _fail(source, item, f"op {op!r} is both quantized ({seen_ops[op]}) and "
                            f"never quantized ({rule_id})")
        rules.never.append(NeverRule(
            id=rule_id, name=_require_text(source, item, "name", f"never rule {rule_id}"),
            ops=ops, reason=_require_text(source, item, "reason", f"never rule {rule_id}"),
            why=str(item.get("why", "")).strip()))
    patterns = raw.get("patterns") or {}
    if not isinstance(patterns, dict):
        raise _fail(source, raw, "'patterns' must be a mapping of pattern kind to settings")
    for kind, item in patterns.items():
        if kind not in PATTERN_KINDS:
            close = difflib.get_close_matches(str(kind), PATTERN_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(source, patterns, f"unknown pattern {kind!r}{hint}; known: "
                        f"{', '.join(PATTERN_KINDS)}")
        defaults = _PATTERN_OPTIONS[kind]
        _check_keys(source, item, _PATTERN_KEYS | set(defaults), f"pattern {kind}")
        rule_id = _require_text(source, item, "id", f"pattern {kind}")
        claim(item, rule_id)
        options = dict(defaults)
        for key in defaults:
            if key in item:
                value = item[key]
                if isinstance(defaults[key], list):
                    value = list(_str_list(source, item, key, f"pattern {kind}"))
                elif isinstance(defaults[key], bool) and not isinstance(value, bool):
                    raise _fail(source, item, f"pattern {kind}: {key} must be true or false")
                elif isinstance(defaults[key], int) and not isinstance(defaults[key], bool) \
                        and not isinstance(value, int):
                    raise _fail(source, item, f"pattern {kind}: {key} must be an integer")
                choices = _CHOICES.get((kind, key))
                if choices and value not in choices:
                    raise _fail(source, item, f"pattern {kind}: {key} must be one of "
                                f"{', '.join(sorted(choices))}, got {value!r}")
                options[key] = value
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _fail(source, item, f"pattern {kind}: enabled must be true or false")
        rules.patterns[kind] = PatternRule(
            kind=kind, id=rule_id, name=_require_text(source, item, "name", f"pattern {kind}"),
            enabled=enabled, options=options,
            reason=_require_text(source, item, "reason", f"pattern {kind}"),
            why=str(item.get("why", "")).strip())
    for item in raw.get("lint") or []:
        _check_keys(source, item, _LINT_KEYS, "a lint check")
        rule_id = _require_text(source, item, "id", "a lint check")
        claim(item, rule_id)
        severity = item.get("severity", "warning")
        if severity not in ("error", "warning"):
            raise _fail(source, item, f"lint check {rule_id}: severity must be error or "
                        "warning")
        name = _require_text(source, item, "name", f"lint check {rule_id}")
        rules.lint[name] = LintRule(id=rule_id, name=name, severity=severity,
                                    reason=_require_text(source, item, "reason",
                                                         f"lint check {rule_id}"),
                                    why=str(item.get("why", "")).strip())
    return rules
