"""The FP8 checks: what TensorRT's FP8 kernels take, checked like the INT8 rules."""

from __future__ import annotations

from collections.abc import Iterator

from qdq_onnx.diagnostics.lint.checks import Hit, check
from qdq_onnx.diagnostics.lint.context import LintContext
from qdq_onnx.graph import ops
from qdq_onnx.placement.fp8_policy import node_shape
from qdq_onnx.types.scheme import scheme_named

# TensorRT's per-channel FP8 scales are for GEMMs (10.6 release notes: "per-channel scaling
# for FP8 matrix multiplications on Hopper").
FP8_PER_CHANNEL_OPS = frozenset({ops.MATMUL, ops.GEMM})


@check("fp8-per-channel-weight")
def fp8_per_channel_weight(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.weighted:
        weight, node = row["weight"], row["node"]
        if weight is None or row["axis"] is None or ctx.scheme_of(weight.dq) != "fp8":
            continue
        if node.op_type not in FP8_PER_CHANNEL_OPS:
            yield node.name, (f"{node.op_type} weight {weight.source!r} has per-channel FP8 "
                              "scales; TensorRT takes per-channel FP8 only for MatMul/Gemm "
                              "(Hopper): use one scale")


@check("mixed-precision-attention")
def mixed_precision_attention(ctx: LintContext) -> Iterator[Hit]:
    for node, bmm1, bmm2 in ctx.attentions:
        found = [ctx.dq(t) for m in (bmm1, bmm2) for t in m.input[:2]]
        schemes = {ctx.scheme_of(d.dq).split("-")[0] for d in found if d is not None}
        if len(schemes) > 1:
            yield node.name, (f"attention around {node.name!r} mixes "
                              f"{' and '.join(sorted(schemes))} Q/DQ on its products; "
                              "TensorRT's fused MHA takes one quantized type")


@check("fp8-outside-fp8-policy")
def fp8_outside_fp8_policy(ctx: LintContext) -> Iterator[Hit]:
    """An FP8 weighted layer the rule file's FP8 policy (the `fp8` section placement applies)
    keeps in another scheme: a depthwise, narrow or large-kernel convolution."""
    for row in ctx.weighted:
        weight, node = row["weight"], row["node"]
        if not ctx.rules.fp8 or weight is None or ctx.scheme_of(weight.dq) != "fp8":
            continue
        shape = node_shape(ctx.index, node)
        rule = next((r for r in ctx.rules.fp8 if r.matches(shape)), None)
        if rule is not None and not scheme_named(rule.scheme).is_float:
            yield node.name, (f"{node.op_type} is FP8 ({shape.describe()}); {rule.id} "
                              f"({rule.name}) keeps such layers {rule.scheme.upper()}: "
                              f"{rule.reason}")
