"""Placement settings: a frozen object, validated when it is made, that the planner takes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qdq_onnx.errors import SettingError
from qdq_onnx.placement.cases import CustomQDQInsertionCase
from qdq_onnx.placement.rules import RuleSet, load_rules
from qdq_onnx.placement.spec import QuantizationSpec, load_spec_file
from qdq_onnx.types.scheme import Scheme, scheme_named

MODES = ("full", "partial")


@dataclass(frozen=True)
class ResolvedPlacement:
    """Placement settings with their files read: the rule set, mode, spec and cases."""

    rules: RuleSet
    mode: str
    spec: QuantizationSpec | None
    cases: tuple[CustomQDQInsertionCase | str, ...]
    force: bool
    keep_layout: bool = False
    weight_scheme: Scheme | None = None
    scheme: Scheme | None = None


@dataclass(frozen=True)
class PlacementConfig:
    """Where Q/DQ goes and in which precision.

    `rules`: a RuleSet, a rule-file path or a bundled name (default tensorrt). `mode`:
    full or partial (default: the spec file's mode, else full). `spec`: a QuantizationSpec
    or a YAML spec path. `cases`: built-in case names or CustomQDQInsertionCase objects.
    `force`: insert into a model that already holds Q/DQ. `keep_layout`: leave the layout
    Transposes a converter put around weighted ops. `weight_scheme`: the precision scheme
    of every weight instead of its rule's (e.g. "int8-4bit" for a 4-bit range in int8
    Q/DQ, an experiment). `scheme`: the precision of every placement instead of its
    rule's ("fp8": FP8 E4M3 everywhere the rules put Q/DQ)."""

    rules: RuleSet | str | os.PathLike | None = None
    mode: str | None = None
    spec: QuantizationSpec | str | os.PathLike | None = None
    cases: Sequence[CustomQDQInsertionCase | str] = field(default=())
    force: bool = False
    keep_layout: bool = False
    weight_scheme: str | None = None
    scheme: str | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise SettingError("mode", f"must be 'full' or 'partial', got {self.mode!r}")
        object.__setattr__(self, "cases", tuple(self.cases or ()))
        if self.weight_scheme is not None:
            scheme_named(self.weight_scheme, "weight_scheme")
        if self.scheme is not None:
            scheme_named(self.scheme, "scheme")

    def resolve(self) -> ResolvedPlacement:
        """Read the rule and spec files; QdqError names what is wrong in them."""
        rules = self.rules if isinstance(self.rules, RuleSet) else load_rules(self.rules)
        spec, spec_mode, spec_cases = self.spec, None, []
        if isinstance(spec, (str, os.PathLike, Path)):
            spec, spec_mode, spec_cases = load_spec_file(spec)
        weight = None if self.weight_scheme is None else scheme_named(self.weight_scheme,
                                                                      "weight_scheme")
        return ResolvedPlacement(rules=rules, mode=self.mode or spec_mode or "full",
                                 spec=spec, cases=(*spec_cases, *self.cases),
                                 force=self.force, keep_layout=self.keep_layout,
                                 weight_scheme=weight,
                                 scheme=None if self.scheme is None else scheme_named(
                                     self.scheme, "scheme"))
