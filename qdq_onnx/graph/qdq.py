"""Reading and undoing the Q/DQ pairs of a quantized graph (ours or another tool's)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from qdq_onnx.graph.index import GraphIndex


@dataclass(frozen=True)
class QdqPair:
    source: str  # the float tensor that is quantized
    quantize: str  # QuantizeLinear node name
    dequantize: str  # DequantizeLinear node name
    output: str  # the DequantizeLinear output consumers read
    scale: str  # scale initializer name
    is_weight: bool


def qdq_pairs(model: onnx.ModelProto) -> list[QdqPair]:
    index = GraphIndex(model.graph)
    pairs = []
    for dq in index.nodes:
        if dq.op_type != "DequantizeLinear":
            continue
        q = index.producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
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
