"""The FP8 checks: what TensorRT's FP8 kernels take, checked like the INT8 rules."""

from __future__ import annotations

from collections.abc import Iterator

from qdq_onnx.diagnostics.lint.checks import Hit, check
from qdq_onnx.diagnostics.lint.context import LintContext
from qdq_onnx.graph import ops

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
