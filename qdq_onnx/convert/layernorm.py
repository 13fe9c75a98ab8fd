"""Fuse decomposed layer normalisation back into one LayerNormalization op (opset 17+).

tf2onnx 1.17 exports Keras 3's LayerNormalization as moments even at opset 17:

    mean = GlobalAveragePool(x);  var = GlobalAveragePool((x - mean) * (x - mean))
    k = Reciprocal(Sqrt(var + eps)) * gamma;  y = x * k + ((-mean) * k [+ beta])

GlobalAveragePool averages over every axis from 2 on, so this is exactly
LayerNormalization(x, gamma, beta, axis=2, epsilon=eps). One op is what TensorRT runs natively
(and in float), and it leaves no mean/variance tensors for a placement rule to quantize.
onnxruntime and onnxruntime-training 1.19 run and train opset-17 LayerNormalization
(measured: loss falls, emit is bit-exact).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.graph.index import GraphIndex

LAYERNORM_OPSET = 17


def _only(index: GraphIndex, tensor: str, op: str) -> onnx.NodeProto | None:
    """The single node reading `tensor`, if it is an `op`."""
    nodes = {id(u.node): u.node for u in index.consumers.get(tensor, [])}  # x*x reads twice
    if len(nodes) != 1 or tensor in index.graph_outputs:
        return None
    node = next(iter(nodes.values()))
    return node if node.op_type == op else None


def _other(node: onnx.NodeProto, tensor: str) -> str | None:
    rest = [t for t in node.input if t != tensor]
    return rest[0] if len(rest) == 1 else None


def match_layernorm(index: GraphIndex, mean: onnx.NodeProto) -> dict | None:
    """The moments pattern of a layer normalisation around its mean (a GlobalAveragePool):
    x, gamma, beta (or None), eps, the final node and all the nodes; or None."""
    x = mean.input[0]
    readers = [u.node for u in index.consumers.get(mean.output[0], [])]
    sub = next((n for n in readers
                if n.op_type == "Sub" and list(n.input) == [x, mean.output[0]]), None)
    neg = next((n for n in readers if n.op_type == "Neg"), None)
    if len(readers) != 2 or sub is None or neg is None:
        return None
    sq = _only(index, sub.output[0], "Mul")
    if sq is None or list(sq.input) != [sub.output[0]] * 2:
        return None
    var = _only(index, sq.output[0], "GlobalAveragePool")
    add = var and _only(index, var.output[0], "Add")
    eps = add and index.constant_value(_other(add, var.output[0]) or "")
    sqrt = add and _only(index, add.output[0], "Sqrt")
    rec = sqrt and _only(index, sqrt.output[0], "Reciprocal")
    if rec is None or eps is None or eps.size != 1:
        return None
    k = _only(index, rec.output[0], "Mul")
    gamma = k and index.constant_value(_other(k, rec.output[0]) or "")
    if gamma is None or gamma.ndim < 3 or gamma.shape[:2] != (1, 1):
        return None
    users = [u.node for u in index.consumers.get(k.output[0], [])]
    scaled = next((n for n in users if n.op_type == "Mul" and x in n.input), None)
    shifted = next((n for n in users if n.op_type == "Mul" and neg.output[0] in n.input), None)
    if len(users) != 2 or scaled is None or shifted is None:
        return None
    nodes = [mean, sub, neg, sq, var, add, sqrt, rec, k, scaled, shifted]
    shift, beta = shifted.output[0], None
    bias = _only(index, shift, "Add")  # `(-mean) * k + beta` when beta is not all zeros
    if bias is not None and bias.output[0] not in index.graph_outputs:
        value = index.constant_value(_other(bias, shift) or "")
        if value is not None and value.shape == gamma.shape:
            shift, beta = bias.output[0], value
            nodes.append(bias)
    out = _only(index, scaled.output[0], "Add")
    if out is None or set(out.input) != {scaled.output[0], shift} or \
            len(index.consumers.get(shift, [])) != 1:
        return None
    return {"x": x, "gamma": gamma, "beta": beta, "eps": float(eps.reshape(-1)[0]),
            "out": out, "nodes": [*nodes, out]}


def fuse_layernorm(model: onnx.ModelProto) -> dict[str, str]:
    """Replace every decomposed layer normalisation of `model` (opset >= 17) in place;
    returns removed node name -> the LayerNormalization node that replaced it."""
    graph = model.graph
    index = GraphIndex(graph)
    removed: dict[str, str] = {}
    fused: list[tuple[dict, onnx.NodeProto]] = []
    for node in index.nodes:
        if node.op_type != "GlobalAveragePool" or node.name in removed:
            continue
        found = match_layernorm(index, node)
        if found is None or any(n.name in removed for n in found["nodes"]):
            continue
        out = found["out"]
        params = [found["x"]]
        for suffix, value in (("scale", found["gamma"]), ("bias", found["beta"])):
            if value is not None:
                params.append(f"{out.name}__{suffix}")
                graph.initializer.append(numpy_helper.from_array(
                    value.reshape(value.shape[2:]).astype(np.float32), params[-1]))
        ln = helper.make_node("LayerNormalization", params, [out.output[0]], name=out.name,
                              axis=2, epsilon=found["eps"])
        fused.append((found, ln))
        for n in found["nodes"]:
            removed[n.name] = out.name
    if not fused:
        return removed
    replace = {found["out"].name: ln for found, ln in fused}
    kept = [replace.get(n.name, n) for n in graph.node
            if n.name not in removed or n.name in replace]
    del graph.node[:]
    graph.node.extend(kept)
    used = {t for n in graph.node for t in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return {name: target for name, target in removed.items() if name != target}
