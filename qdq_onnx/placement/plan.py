"""The placement plan: the one serialisable record of where Q/DQ goes and why.

Planning produces it, insertion applies it, and inspect/explain/lint read it. Each entry is one
input slot of one node (consumer, input index): the tensor read there, whether it is an
activation (per-tensor scale) or a weight (per-channel scale on `axis`), and the rule that
decided it with a one-line reason.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qdq_onnx.errors import QdqError
from qdq_onnx.types.scheme import DEFAULT_SCHEME, Scheme, scheme_named

PLAN_FORMAT = "qdq-onnx-plan"
PLAN_VERSION = 1
# Rule ids of the decisions a user asked for: a spec entry, a custom case ("CASE:name").
# Policy (the cost model, lint) treats them as the user's choice, never as lost coverage.
USER_RULES = ("SPEC", "CASE:")


@dataclass(frozen=True)
class Placement:
    """Q/DQ on `consumer.input[input]` (reading `tensor`) in precision `scheme` (a name
    of `qdq_onnx.types.scheme`)."""

    tensor: str
    consumer: str
    input: int
    kind: str  # "activation" | "weight"
    axis: int | None
    rule: str
    reason: str
    layer: str | None = None
    scale_group: str | None = None
    scheme: str = DEFAULT_SCHEME

    def __post_init__(self) -> None:
        # the name is parsed here, when the plan is made or read (a misspelt or unknown
        # scheme fails at once, naming it); every stage after reads `quantization`
        _parsed(self.scheme)

    @property
    def quantization(self) -> Scheme:
        """The quantization scheme this pair holds (the name already parsed)."""
        return _parsed(self.scheme)

    @property
    def key(self) -> tuple[str, int]:
        return (self.consumer, self.input)


_parsed = functools.cache(scheme_named)  # each scheme name parsed once per process


def _placement(entry: dict[str, Any], source: str) -> Placement:
    try:
        return Placement(**entry)
    except QdqError as exc:  # the scheme name: say which entry of which plan
        where = f"{entry.get('consumer')}[{entry.get('input')}]"
        raise QdqError(f"{source}: placement on {where}: {exc}") from exc


@dataclass(frozen=True)
class FloatDecision:
    """An input slot a rule looked at and deliberately left float."""

    consumer: str
    input: int
    tensor: str
    rule: str
    reason: str
    layer: str | None = None


@dataclass(frozen=True)
class KeptFP32:
    """A node the range guard keeps in FP32 while the rest of the float remainder is typed
    lower (an FP32 island), the guard rule that decided it and why; `tensor` and `value`
    are what it measured (a tensor's observed max |x|, a weight's, a reduction's size)."""

    node: str
    op: str
    rule: str
    reason: str
    tensor: str | None = None
    value: float | None = None


@dataclass
class PlacementPlan:
    """The whole placement decision for one model: `placements` (Q/DQ on which consumer
    input, activation or weight, axis, rule, reason), `left_float` (slots a rule kept
    float on purpose), the mode, the rule file, spec and cases used, notes on conflicts,
    and a fingerprint of the model it was made for; once the float remainder is typed,
    its type (`high_precision`: fp16, bf16, fp32) and the nodes the range guard kept FP32
    (`kept_fp32`). JSON-serialisable (`save`/`load`)."""

    placements: list[Placement] = field(default_factory=list)
    left_float: list[FloatDecision] = field(default_factory=list)
    mode: str = "full"
    rules: dict[str, str] = field(default_factory=dict)
    spec: list[dict[str, Any]] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    high_precision: str = "fp32"
    # whether the typing stage chose high_precision (else it is the untyped file's FP32)
    remainder_recorded: bool = False
    kept_fp32: list[KeptFP32] = field(default_factory=list)
    # what the accuracy guard measured and moved (empty when it did not run)
    accuracy_guard: dict[str, Any] = field(default_factory=dict)
    # what scale refinement measured and rescaled (empty when it did not run)
    scale_refinement: dict[str, Any] = field(default_factory=dict)

    # -- queries ---------------------------------------------------------------------------
    def activations(self) -> list[Placement]:
        """The activation placements (per-tensor scales), in graph order."""
        return [p for p in self.placements if p.kind == "activation"]

    def weights(self) -> list[Placement]:
        """The weight placements (per-channel scales on `axis`), in graph order."""
        return [p for p in self.placements if p.kind == "weight"]

    def schemes(self) -> list[str]:
        """The scheme names the plan uses, in order of first use."""
        return list(dict.fromkeys(p.scheme for p in self.placements))

    def activation_groups(self) -> dict[str, list[Placement]]:
        """Activation placements grouped by the scale they share (one Q/DQ pair each)."""
        groups: dict[str, list[Placement]] = {}
        for p in self.activations():
            groups.setdefault(p.scale_group or p.tensor, []).append(p)
        return groups

    def layer_groups(self) -> dict[str, list[Placement]]:
        """Placements grouped by layer (the Keras layer when known, else the consumer
        node): what sensitivity analysis and the accuracy guard move as one."""
        groups: dict[str, list[Placement]] = {}
        for p in self.placements:
            groups.setdefault(p.layer or p.consumer, []).append(p)
        return groups

    def for_consumer(self, consumer: str) -> list[Placement]:
        """The placements on inputs of the node named `consumer`."""
        return [p for p in self.placements if p.consumer == consumer]

    def counts(self) -> dict[str, int]:
        """Numbers of activation inputs, activation Q/DQ pairs, weights, float decisions."""
        return {
            "activation_inputs": len(self.activations()),
            "activation_qdq_pairs": len(self.activation_groups()),
            "weights": len(self.weights()),
            "left_float": len(self.left_float),
            "kept_fp32": len(self.kept_fp32),
        }

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (format, version, model, decisions, notes)."""
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "model": self.model,
            "mode": self.mode,
            "rules": self.rules,
            "spec": self.spec,
            "cases": self.cases,
            "counts": self.counts(),
            "placements": [asdict(p) for p in self.placements],
            "left_float": [asdict(f) for f in self.left_float],
            "high_precision": self.high_precision,
            "kept_fp32": [asdict(k) for k in self.kept_fp32],
            "notes": self.notes,
            **({"remainder_recorded": True} if self.remainder_recorded else {}),
            **({"accuracy_guard": self.accuracy_guard} if self.accuracy_guard else {}),
            **({"scale_refinement": self.scale_refinement} if self.scale_refinement else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<plan>") -> PlacementPlan:
        """A plan from `to_dict()` data; QdqError naming `source` if malformed."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise QdqError(f"{source}: not a qdq-onnx placement plan (missing format: "
                           f"{PLAN_FORMAT})")
        if data.get("version") != PLAN_VERSION:
            raise QdqError(f"{source}: plan version {data.get('version')!r} is not supported "
                           f"(expected {PLAN_VERSION})")
        try:
            placements = [_placement(p, source) for p in data.get("placements", [])]
            left = [FloatDecision(**f) for f in data.get("left_float", [])]
            kept = [KeptFP32(**k) for k in data.get("kept_fp32", [])]
        except TypeError as exc:
            raise QdqError(f"{source}: malformed plan entry: {exc}") from exc
        for p in placements:
            if p.kind not in ("activation", "weight"):
                raise QdqError(f"{source}: placement on {p.consumer}[{p.input}] has kind "
                               f"{p.kind!r}; expected activation or weight")
        return cls(placements=placements, left_float=left, mode=data.get("mode", "full"),
                   rules=data.get("rules", {}), spec=data.get("spec", []),
                   cases=data.get("cases", []), notes=data.get("notes", []),
                   model=data.get("model", {}),
                   high_precision=data.get("high_precision", "fp32"), kept_fp32=kept,
                   remainder_recorded=bool(data.get("remainder_recorded", False)),
                   accuracy_guard=dict(data.get("accuracy_guard") or {}),
                   scale_refinement=dict(data.get("scale_refinement") or {}))

    def to_json(self) -> str:
        """The plan as indented JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON to `path` atomically; returns the path."""
        from qdq_onnx.files.atomic import write_text_atomic

        return write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PlacementPlan:
        """Read a plan saved by `save`; QdqError for a missing or malformed file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise QdqError(f"{p}: no such plan file") from err
        except json.JSONDecodeError as exc:
            raise QdqError(f"{p}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=str(p))
