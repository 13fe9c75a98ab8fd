"""Rule files: the placement policy as data (`rules/*.yaml`), loaded and validated.

A rule file holds op rules (which inputs of which op types get Q/DQ, and the per-channel
weight axis), ops never quantized, the op taxonomy TensorRT fuses and propagates through,
graph-pattern rules with their options, and the checks of `qdq-onnx lint`. Every rule has a
stable id, a short name, a one-line reason and a longer why.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
from pathlib import Path

from qdq_onnx.errors import QdqError
from qdq_onnx.files.yaml_lines import load_yaml
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
from qdq_onnx.placement.rules.parse import parse_rules

DEFAULT_RULES = "tensorrt"

__all__ = ["DEFAULT_RULES", "LintRule", "NeverRule", "OpRule", "PatternRule",
           "PrecisionGuard", "PrecisionPolicy", "RuleSet",
           "Taxonomy", "WeightAxis", "bundled_rule_files", "default_rules", "load_rules",
           "parse_rules", "rules_dir"]


def rules_dir() -> Path:
    """The folder holding the bundled rule files: package data (`qdq_onnx/rule_files`, a
    link to the repository's `rules/` in a checkout, the files themselves in a wheel)."""
    return (Path(__file__).resolve().parents[2] / "rule_files").resolve()


def bundled_rule_files() -> dict[str, Path]:
    """Bundled rule sets by name ("tensorrt", "nvidia-tf-toolkit")."""
    return {p.stem: p for p in sorted(rules_dir().glob("*.yaml"))}


def _find(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.is_file():
        return p
    bundled = bundled_rule_files()
    if str(path_or_name) in bundled:
        return bundled[str(path_or_name)]
    close = difflib.get_close_matches(str(path_or_name), list(bundled), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise QdqError(f"rule file {str(path_or_name)!r} not found{hint}; bundled rule sets: "
                   f"{', '.join(bundled)}")


@functools.lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The bundled TensorRT rules, parsed once per process (read-only: do not modify)."""
    return load_rules(DEFAULT_RULES)


@functools.lru_cache(maxsize=1)
def _bundled_defaults() -> RuleSet:
    p = _find(DEFAULT_RULES)
    return parse_rules(load_yaml(p), source=str(p))


def load_rules(path_or_name: str | Path | None = None) -> RuleSet:
    """Load a rule file by path, or a bundled one by name (default "tensorrt").

    A file without a `taxonomy` (`precision`) section inherits the bundled TensorRT one, so
    the op facts TensorRT fuses and propagates through, and the range guard, are written
    down once."""
    p = _find(DEFAULT_RULES if path_or_name is None else path_or_name)
    raw = load_yaml(p)
    own = raw if isinstance(raw, dict) else {}
    sha256 = hashlib.sha256(p.read_bytes()).hexdigest()
    if p.resolve() == _find(DEFAULT_RULES).resolve():  # the defaults themselves: one parse
        rules = parse_rules(raw, source=str(p), sha256=sha256)
        rules.axis_fallback = list(rules.op_rules)
        return rules
    bundled = _bundled_defaults()
    rules = parse_rules(raw, source=str(p), sha256=sha256,
                        default_taxonomy=None if "taxonomy" in own else bundled.taxonomy,
                        default_precision=None if "precision" in own else bundled.precision)
    rules.axis_fallback = list(bundled.op_rules)
    return rules
