"""Attention outside TensorRT's fused INT8 multi-head attention stays float: TensorRT fuses
BMM1, Softmax and BMM2 into one INT8 kernel only for head sizes 16, 32 or 64 and sequences up
to 512 (developer guide, "MHA fusion", quoted in NVIDIA/TensorRT#2981, #4167); outside them it
runs int8 gemm -> fp32 softmax -> int8 gemm as separate kernels, often slower than FP16
(#3714). The limits are this pattern's options in the rule file; `qdq-onnx lint` judges a
quantized attention by the same options (TRT-L017)."""

from __future__ import annotations

import contextlib

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.graph.attention import attention_products
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.graph.opset import upgrade_opset
from qdq_onnx.graph.shapes import tensor_shapes
from qdq_onnx.placement.patterns.base import PatternKind, layer_of
from qdq_onnx.placement.proposals import PRIORITY_PATTERN, Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet
from qdq_onnx.placement.slots import slot_proposal
from qdq_onnx.types.scheme import INT8

INFER_OPSET = 19
DEFAULTS = {"head_sizes": [16, 32, 64], "max_sequence": 512,
            "fp8_max_head": 64, "fp8_max_sequence": 3072}


def outside_limits(options: dict, scheme: str, head: int | None, seq: int | None
                   ) -> list[str]:
    """What puts an attention of head size `head` and longest sequence `seq` outside the
    fused MHA of `scheme` (int8, fp8) by `options`; [] when inside (or not known)."""
    if scheme == "fp8":
        limit_head, limit_seq = options["fp8_max_head"], options["fp8_max_sequence"]
        return [*([f"head size {head} (fused FP8: <= {limit_head})"]
                  if head is not None and head > limit_head else []),
                *([f"sequence {seq} (fused FP8: <= {limit_seq})"]
                  if seq is not None and seq > limit_seq else [])]
    sizes = options["head_sizes"]
    return [*([f"head size {head} (fused: {', '.join(map(str, sizes))})"]
              if head is not None and head not in sizes else []),
            *([f"sequence {seq} (fused: <= {options['max_sequence']})"]
              if seq is not None and seq > options["max_sequence"] else [])]


def attention_sizes(model, found: list) -> dict[str, tuple[int | None, int | None]]:
    """Softmax name -> (head size, longest sequence) of each (softmax, bmm1, bmm2): the
    head size is the last axis of BMM1's first input, the sequences the scores' last two."""
    wanted = [t for _, bmm1, _ in found for t in (bmm1.input[0], bmm1.output[0])]
    shapes = tensor_shapes(model, wanted)
    if any(shapes.get(t) is None for t in wanted) and default_opset(model) < INFER_OPSET:
        # onnx's inference loses some exporters' shapes at older op versions (the PP-OCRv4
        # recogniser at opset 13) and finds them at 19: ask again on an upgraded copy
        with contextlib.suppress(QdqError):
            shapes = tensor_shapes(upgrade_opset(model, INFER_OPSET), wanted)
    out = {}
    for softmax, bmm1, _ in found:
        head = (shapes.get(bmm1.input[0]) or [None])[-1]
        seqs = [d for d in (shapes.get(bmm1.output[0]) or [])[-2:] if d is not None]
        out[softmax.name] = (head, max(seqs) if seqs else None)
    return out


def attention_outside_fused_mha(index: GraphIndex, layers: LayerGraph, rules: RuleSet,
                                rule: PatternRule) -> list[Proposal]:
    """Float proposals for both products of every attention outside the INT8 limits (an
    FP8 file is judged by the same, stricter, limits: the scheme is chosen after placement)."""
    found = [(n, *p) for n in index.nodes if n.op_type == "Softmax"
             and (p := attention_products(index, n)) is not None]
    if not found:
        return []
    sizes = attention_sizes(layers.model, found)
    out: list[Proposal | None] = []
    for softmax, bmm1, bmm2 in found:
        problems = outside_limits(rule.options, INT8.name, *sizes[softmax.name])
        if not problems:
            continue
        why = (f"attention around {softmax.name!r} outside TensorRT's fused INT8 MHA "
               f"({' and '.join(problems)}): kept float")
        for product in (bmm1, bmm2):
            out.extend(slot_proposal(index, product, i, False, rules, rule.id, why,
                                     PRIORITY_PATTERN, layer_of(layers, product))
                       for i in index.live_inputs(product))
    return [p for p in out if p is not None]


KIND = PatternKind("attention_outside_fused_mha", attention_outside_fused_mha,
                   options=dict(DEFAULTS))
