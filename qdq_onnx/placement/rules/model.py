"""The rule set as data: op rules, never rules, the op taxonomy, pattern rules, lint checks.

Everything TensorRT-specific that placement and lint need (which ops are weighted and on
which axis their weights are per-channel, what TensorRT fuses after a weighted op, what it
propagates Q/DQ through) is read from here, so policy and check cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qdq_onnx.errors import QdqError
from qdq_onnx.types.scheme import DEFAULT_SCHEME


@dataclass(frozen=True)
class WeightAxis:
    """Per-channel axis of a weight: fixed, or chosen by a node attribute (Gemm transB)."""

    fixed: int | None = None
    attribute: str | None = None
    by_value: tuple[tuple[int, int], ...] = ()
    default: int | None = None

    def resolve(self, node_attrs: dict[str, Any]) -> int:
        """The axis for a node with these attributes (a raw, possibly negative, axis)."""
        if self.attribute is None:
            if self.fixed is None:
                raise QdqError("weight axis rule has neither a fixed axis nor an attribute")
            return self.fixed
        value = node_attrs.get(self.attribute, 0 if self.default is None else self.default)
        for v, axis in self.by_value:
            if v == value:
                return axis
        raise QdqError(f"no weight axis for {self.attribute}={value!r}")

    def describe(self) -> str:
        """A short text for listings: the fixed axis, or the attribute it depends on."""
        if self.attribute is None:
            return f"weight axis {self.fixed}"
        return f"weight axis by {self.attribute}"


@dataclass(frozen=True)
class OpRule:
    """Which inputs (`data`, `weight`, `live`, indices) of the ops in `ops` get Q/DQ, the
    weight input's index and per-channel axis, optional Keras classes it is limited to,
    and what to do when the weight is computed at run time."""

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
    scheme: str | None = None  # precision of its Q/DQ; None: the rule file's default

    @property
    def quantizes_weight(self) -> bool:
        """Whether this rule quantizes the weight input (the op is a weighted layer)."""
        return "weight" in self.inputs


@dataclass(frozen=True)
class NeverRule:
    """Ops that never get Q/DQ of their own, or (`tensors: non-float`) tensors of a kind
    that never do, whatever reads them."""

    id: str
    name: str
    ops: tuple[str, ...]
    reason: str
    why: str
    tensors: str | None = None  # "non-float": integer and boolean tensors


@dataclass(frozen=True)
class PatternRule:
    """A graph-pattern rule of one kind, switched on or off, with its options."""

    kind: str
    id: str
    name: str
    enabled: bool
    options: dict[str, Any]
    reason: str
    why: str


@dataclass(frozen=True)
class LintRule:
    """A lint check of the rule file: id, name (the check's registry key), severity."""

    id: str
    name: str
    severity: str  # error | warning
    reason: str
    why: str


@dataclass(frozen=True)
class PrecisionGuard:
    """A range-guard rule: which ops stay FP32 when the float remainder is typed in one of
    `types` (fp16, bf16). `kind` says what it measures (activation_max,
    activation_subnormal, weight_max, weight_subnormal, reduction, no_low_precision_type),
    `limit` its threshold and `ops` the op types it is limited to (reduction)."""

    id: str
    name: str
    kind: str
    types: tuple[str, ...]
    reason: str
    why: str
    limit: float | None = None
    ops: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrecisionPolicy:
    """The float remainder: its default type and the guards that keep ops FP32."""

    high_precision: str = "fp16"
    guards: tuple[PrecisionGuard, ...] = ()

    def guards_for(self, type_name: str) -> list[PrecisionGuard]:
        """The guards that apply when the remainder is `type_name`."""
        return [g for g in self.guards if type_name in g.types]


@dataclass(frozen=True)
class CostRule:
    """A cost-model rule: weighted layers of `ops` whose INT8 (or FP8) gain over the float
    remainder is nothing measurable stay in the remainder. A layer matches when every
    condition given holds: fewer than `out_channels_below` output channels, fewer than
    `in_channels_below` input channels (per group), less than `macs_share_below` of the
    model's multiply-accumulates."""

    id: str
    name: str
    ops: tuple[str, ...]
    reason: str
    why: str
    out_channels_below: int | None = None
    in_channels_below: int | None = None
    macs_share_below: float | None = None


@dataclass(frozen=True)
class AccuracyGuardPolicy:
    """The accuracy guard: after calibration, the quantized model's outputs must agree with
    the float model's on the calibration data (argmax `agreement` for class-like outputs,
    `sqnr_db` for the others); the layers responsible move to the float remainder, on at
    most `samples` samples and `max_trials` trial evaluations. A move that only raises the
    SQNR of the others is kept when it raises it by `min_gain_db` at least."""

    id: str
    name: str
    reason: str
    why: str
    agreement: float = 0.99
    sqnr_db: float = 20.0
    min_gain_db: float = 0.5
    samples: int = 128
    max_trials: int = 32


@dataclass(frozen=True)
class ScaleRefinementPolicy:
    """Output-aware refinement of calibrated activation ranges: each INT8 activation range
    is multiplied by the best of `factors` for the divergence of the quantized model's
    outputs from the float model's on at most `samples` calibration samples, key by key in
    graph order, for up to `sweeps` sweeps; by default only while keys x factors x sweeps x
    samples x the model's MACs per sample stays within `max_cost` (fewer samples, down to
    `min_samples`, before skipping)."""

    id: str
    name: str
    reason: str
    why: str
    factors: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.12, 1.25, 1.4, 1.6)
    sweeps: int = 2
    samples: int = 512
    min_samples: int = 64
    max_cost: float = 1e12


@dataclass(frozen=True)
class Taxonomy:
    """TensorRT's view of op types beyond the op rules.

    `fusible_followers`: ops TensorRT fuses into the weighted op they follow (BN,
    activations), so no Q/DQ may sit between. `precision_neutral`: ops TensorRT moves Q
    backwards and DQ forwards through, so re-quantizing after them is a loss."""

    fusible_followers: frozenset[str] = frozenset()
    precision_neutral: frozenset[str] = frozenset()
    source: str = ""


@dataclass
class RuleSet:
    """A loaded rule file: op rules, never rules, taxonomy, pattern rules and lint
    checks, with the file's path and sha256 (recorded in every plan)."""

    name: str
    description: str
    path: str
    sha256: str
    op_rules: list[OpRule] = field(default_factory=list)
    never: list[NeverRule] = field(default_factory=list)
    patterns: dict[str, PatternRule] = field(default_factory=dict)
    lint: dict[str, LintRule] = field(default_factory=dict)  # by name
    taxonomy: Taxonomy = field(default_factory=Taxonomy)
    scheme: str = DEFAULT_SCHEME  # the precision of every Q/DQ no op rule sets otherwise
    precision: PrecisionPolicy = field(default_factory=PrecisionPolicy)
    cost: list[CostRule] = field(default_factory=list)
    accuracy_guard: AccuracyGuardPolicy | None = None
    scale_refinement: ScaleRefinementPolicy | None = None
    fp8: list[Any] = field(default_factory=list)  # fp8.Fp8Rule: the FP8 policy, in order
    # The bundled TensorRT file's op rules: the weight axis of an op this file leaves alone
    # but a spec quantizes (a ConvTranspose under nvidia-tf-toolkit) is TensorRT's.
    axis_fallback: list[OpRule] = field(default_factory=list)

    def scheme_for(self, op_type: str | None) -> str:
        """The precision scheme of Q/DQ on the inputs of an `op_type` node: its op rule's,
        else the file's default."""
        rule = self.op_rule_for(op_type) if op_type else None
        return rule.scheme if rule is not None and rule.scheme else self.scheme

    def schemes(self) -> list[str]:
        """Every scheme the rule file names (the default first)."""
        return list(dict.fromkeys([self.scheme, *(r.scheme for r in self.op_rules
                                                  if r.scheme)]))

    def op_rule_for(self, op_type: str) -> OpRule | None:
        """The op rule covering `op_type`, or None."""
        for rule in self.op_rules:
            if op_type in rule.ops:
                return rule
        return None

    def weight_axis_rule(self, op_type: str) -> OpRule | None:
        """The op rule giving `op_type`'s per-channel weight axis: this file's, else the
        bundled TensorRT rules' (`axis_fallback`), else None."""
        for rule in (self.op_rule_for(op_type),
                     next((r for r in self.axis_fallback if op_type in r.ops), None)):
            if rule is not None and rule.weight_axis is not None:
                return rule
        return None

    def never_rule_for(self, op_type: str) -> NeverRule | None:
        """The never rule listing `op_type`, or None."""
        for rule in self.never:
            if op_type in rule.ops:
                return rule
        return None

    def never_rule_for_tensors(self, kind: str) -> NeverRule | None:
        """The never rule for tensors of `kind` ("non-float"), or None."""
        return next((r for r in self.never if r.tensors == kind), None)

    def weighted_ops(self) -> frozenset[str]:
        """Op types whose weight input this rule set quantizes (TensorRT's weighted layers)."""
        return frozenset(op for r in self.op_rules if r.quantizes_weight for op in r.ops)

    @property
    def fusible_followers(self) -> frozenset[str]:
        """Ops TensorRT fuses into the weighted op before them (taxonomy)."""
        return self.taxonomy.fusible_followers

    @property
    def precision_neutral(self) -> frozenset[str]:
        """Ops TensorRT moves Q/DQ through (taxonomy)."""
        return self.taxonomy.precision_neutral

    def pattern(self, kind: str) -> PatternRule | None:
        """The enabled pattern rule of this kind, or None."""
        rule = self.patterns.get(kind)
        return rule if rule is not None and rule.enabled else None

    def all_rules(self) -> list[Any]:
        """Every rule with an id, in file order by section."""
        return [*self.op_rules, *self.never, *self.patterns.values(), *self.lint.values(),
                *self.precision.guards, *self.cost, *self.fp8,
                *([self.accuracy_guard] if self.accuracy_guard else []),
                *([self.scale_refinement] if self.scale_refinement else [])]

    def by_id(self, rule_id: str) -> Any:
        """The rule with this id, or None."""
        for rule in self.all_rules():
            if rule.id == rule_id:
                return rule
        return None

    def summary(self) -> dict[str, str]:
        """{'name', 'path', 'sha256'} of the rule file (recorded in plans)."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256}
