"""The precision scheme of each Q/DQ pair of a model: from the placement plan the file
carries, else from the pair's zero point (another tool's file)."""

from __future__ import annotations

import json

import onnx

from qdq_onnx.files.metadata import PLAN_KEY, WEIGHT_BITS_KEY, get_metadata
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.qdq import QdqPair
from qdq_onnx.types.scheme import DEFAULT_SCHEME, INT8, Scheme, scheme_named, scheme_of_zero_point


def planned_schemes(model: onnx.ModelProto) -> dict[str, Scheme]:
    """Quantized tensor -> scheme, as the embedded placement plan records it. A plan
    written before plans named schemes gets int8, with weights in the range the file's
    `weight_bits` record gives."""
    text = get_metadata(model, PLAN_KEY)
    if not text:
        return {}
    placements = json.loads(text).get("placements", [])
    bits = int(get_metadata(model, WEIGHT_BITS_KEY) or INT8.bits)
    out: dict[str, Scheme] = {}
    for p in placements:
        if "scheme" in p:
            out[p["tensor"]] = scheme_named(p["scheme"])
        else:
            default = scheme_named(DEFAULT_SCHEME)
            out[p["tensor"]] = default.with_bits(bits) if p.get("kind") == "weight" \
                else default
    return out


def zero_point_scheme(index: GraphIndex, node: onnx.NodeProto) -> Scheme:
    """The scheme a Q or DQ node's zero point type says (the default without one)."""
    name = node.input[2] if len(node.input) > 2 else ""
    if name in index.initializers:  # by ONNX type: numpy has no FP8 dtype
        found = scheme_of_zero_point(index.initializers[name].data_type)
    else:
        zp = index.constant_value(name) if name else None
        found = scheme_of_zero_point(zp.dtype) if zp is not None else None
    return found or scheme_named(DEFAULT_SCHEME)


def pair_schemes(model: onnx.ModelProto, pairs: list[QdqPair],
                 index: GraphIndex | None = None) -> dict[str, Scheme]:
    """Source tensor -> scheme of every pair: the plan's, else the one whose type the zero
    point has, else the default scheme."""
    planned = planned_schemes(model)
    index = index or GraphIndex(model.graph)
    out: dict[str, Scheme] = {}
    for p in pairs:
        if p.source in planned:
            out[p.source] = planned[p.source]
            continue
        out[p.source] = zero_point_scheme(index, index.by_name[p.quantize])
    return out
