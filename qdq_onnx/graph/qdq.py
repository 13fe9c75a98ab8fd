"""Reading and undoing the Q/DQ pairs of a quantized graph (ours or another tool's)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex


@dataclass(frozen=True)
class QdqPair:
    source: str  # the float tensor that is quantized
    quantize: str  # QuantizeLinear node name
    dequantize: str  # DequantizeLinear node name
    output: str  # the DequantizeLinear output consumers read
    scale: str  # scale initializer name
    is_weight: bool


@dataclass(frozen=True)
class Dequantized:
    """What feeds a tensor produced by DequantizeLinear: the DQ node, the QuantizeLinear
    before it (None for a DQ of a stored int8 tensor) and the float (or int8) source."""

    dq: onnx.NodeProto
    q: onnx.NodeProto | None
    source: str


def dequantized(index: GraphIndex, tensor: str) -> Dequantized | None:
    """The DQ (and Q) behind `tensor`, or None when no DequantizeLinear produces it."""
    dq = index.producer.get(tensor)
    if dq is None or dq.op_type != ops.DEQUANTIZE:
        return None
    q = index.producer.get(dq.input[0])
    if q is None or q.op_type != ops.QUANTIZE:
        return Dequantized(dq, None, dq.input[0])
    return Dequantized(dq, q, q.input[0])


def qdq_pairs(model: onnx.ModelProto, index: GraphIndex | None = None) -> list[QdqPair]:
    """Every QuantizeLinear -> DequantizeLinear pair of the main graph, in graph order."""
    index = index or GraphIndex(model.graph)
    pairs = []
    for dq in index.nodes:
        if dq.op_type != ops.DEQUANTIZE:
            continue
        found = dequantized(index, dq.output[0])
        if found is None or found.q is None:
            continue
        q = found.q
        pairs.append(QdqPair(q.input[0], q.name, dq.name, dq.output[0], q.input[1],
                             index.is_constant(q.input[0])))
    return pairs


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float model behind a Q/DQ graph: every Q->DQ pair bypassed and removed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    pairs = qdq_pairs(out)
    bypass = {p.output: p.source for p in pairs}
    drop = {p.quantize for p in pairs} | {p.dequantize for p in pairs}
    kept = [n for n in out.graph.node if n.name not in drop]
    for node in kept:
        for i, t in enumerate(node.input):
            if t in bypass:
                node.input[i] = bypass[t]
    for o in out.graph.output:
        if o.name in bypass:  # a graph output read through Q/DQ: keep the name via Identity
            kept.append(onnx.helper.make_node("Identity", [bypass[o.name]], [o.name],
                                              name=f"{o.name}__float"))
    del out.graph.node[:]
    out.graph.node.extend(kept)
    used = {t for n in out.graph.node for t in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out
