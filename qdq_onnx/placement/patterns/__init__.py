"""Graph-pattern rules, one module per kind. Each kind declares the options its rule-file
entry may set next to its function (`KIND = PatternKind(...)`), and the rule-file parser
validates against that declaration. Pure functions: graph in, proposals out.

Adding a kind: a module here with its function and `KIND`, listed in `_MODULES` below, and
an entry under `patterns:` in the rule file."""

from __future__ import annotations

from qdq_onnx.placement.patterns.base import PatternFn, PatternKind
from qdq_onnx.placement.patterns.residual import branch_path, weighted_branch

# In proposal order: on equal priority the later pattern wins (normalization keeps its
# internals float over the residual rule).
_MODULES = ("residual", "batchnorm", "maxpool", "se_multiply", "concat", "attention",
            "normalization")


def _registry() -> dict[str, PatternKind]:
    import importlib

    kinds = {}
    for name in _MODULES:
        kind = importlib.import_module(f"qdq_onnx.placement.patterns.{name}").KIND
        kinds[kind.name] = kind
    return kinds


PATTERN_KINDS: dict[str, PatternKind] = _registry()

__all__ = ["PATTERN_KINDS", "PatternFn", "PatternKind", "branch_path", "weighted_branch"]
