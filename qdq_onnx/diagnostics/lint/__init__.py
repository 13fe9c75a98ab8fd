"""Static TensorRT-fusion check of any Q/DQ ONNX graph (ours, Model Optimizer's,
onnxruntime's): which weighted layers TensorRT can run in INT8 and which fusions the
placement breaks. The checks, their ids and severities come from the rule file's `lint:`
section; the expected weight axes, the weighted ops, the fused followers and the residual
branch walk come from the same file's placement rules, so policy and check cannot drift.

Adding a check: an entry under `lint:` in the rule file (id, name, severity, reason) and a
function registered with `@check(name)` in `checks.py`, with a positive and a negative test.
"""

from __future__ import annotations

import onnx

from qdq_onnx.diagnostics.lint import checks_fp8, checks_typing  # noqa: F401 - registers
from qdq_onnx.diagnostics.lint.checks import CHECKS, STRONG_TYPING_CHECKS, check
from qdq_onnx.diagnostics.lint.context import TYPINGS, LintContext
from qdq_onnx.diagnostics.lint.report import Finding, LintReport, WeightedLayer
from qdq_onnx.errors import QdqError
from qdq_onnx.placement.rules import RuleSet

__all__ = ["CHECKS", "Finding", "LintReport", "WeightedLayer", "check", "lint_model"]


def lint_model(model: onnx.ModelProto, rules: RuleSet, typing: str = "strong") -> LintReport:
    """Lint `model` against `rules`: the weighted layers with their prediction (quantized,
    and in which scheme), and one finding per hit of every check the rule file lists.
    `typing` strong (TensorRT 11) also counts the precision every compute op runs in and
    checks the float remainder's types; weak skips that."""
    if typing not in TYPINGS:
        raise QdqError(f"typing must be one of {', '.join(TYPINGS)}, got {typing!r}")
    ctx = LintContext(model, rules)
    report = LintReport(typing=typing)
    for row in ctx.weighted:
        node, data, weight = row["node"], row["data"], row["weight"]
        axis_ok = row["axis"] is None or row["expected"] is None \
            or row["axis"] == row["expected"]
        zp_ok = all(ctx.zp_ok(d.dq) for d in (data, weight) if d is not None)
        quantized = data is not None and weight is not None and axis_ok and zp_ok
        report.layers.append(WeightedLayer(
            node.name, node.op_type, quantized, ctx.scheme_of(weight.dq) if quantized else None,
            data is not None, weight is not None, row["axis"], row["expected"],
            None if quantized else ctx.float_by_plan.get(node.name, (None,))[0]))
    for name, rule in rules.lint.items():
        fn = CHECKS.get(name)
        if fn is None:
            raise QdqError(f"{rules.path}: lint check {rule.id} ({name}) has no "
                           f"implementation; known checks: {', '.join(sorted(CHECKS))}")
        if typing != "strong" and name in STRONG_TYPING_CHECKS:
            continue
        report.findings.extend(Finding(rule.id, name, rule.severity, node, message)
                               for node, message in fn(ctx))
    if typing == "strong":
        from qdq_onnx.diagnostics.op_precision import precision_counts

        report.precisions = precision_counts(ctx.precisions)
        report.kept_fp32 = [(r.node, r.op, r.rule, r.reason) for r in ctx.precisions
                            if r.rule is not None]
    return report
