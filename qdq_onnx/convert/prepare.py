"""Normalise a float ONNX model before planning: supported opset, unique node names, layout
Transposes off the weighted ops, weights as un-shared initializers, and BatchNorm folded into
the preceding weighted op where exact.

TensorRT folds BN into the Conv anyway; folding it first lets the per-channel weight scale
absorb the BN factor, and means no Q/DQ can land between a Conv and its BN.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.convert.flatten_layout import fold_flatten_transposes
from qdq_onnx.convert.layernorm import LAYERNORM_OPSET, fuse_layernorm
from qdq_onnx.convert.layout import push_transposes, removed_nodes
from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset, ensure_supported_opset
from qdq_onnx.graph import ops
from qdq_onnx.graph.batchnorm import batchnorm_affine
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.layers import read_layer_map, write_layer_map
from qdq_onnx.graph.ops import QDQ_OPS, WEIGHTED_OPS
from qdq_onnx.graph.weights import require_finite_weights


def prepare_model(model: onnx.ModelProto, copy: bool = True, layout: bool = True,
                  check_weights: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """Return a normalised copy of `model` and notes on what changed. `model` is untouched
    unless `copy=False` (for callers that own the model and want to skip the copy).
    `layout=False` keeps the layout Transposes around weighted ops. `check_weights=False`
    leaves the NaN/Inf check of the weights to the caller (insertion, which reads them
    anyway)."""
    if copy:
        work = onnx.ModelProto()
        work.CopyFrom(model)
    else:
        work = model
    work, note = ensure_supported_opset(work)
    notes = [note] if note else []
    graph = work.graph
    if any(n.op_type in ops.CONTROL_FLOW_OPS for n in graph.node):
        found = sorted({n.op_type for n in graph.node if n.op_type in ops.CONTROL_FLOW_OPS})
        notes.append(f"control-flow ops ({', '.join(found)}) are kept float; their subgraphs "
                     "are not quantized")
    layer_map = read_layer_map(work)
    renamed = _unique_names(graph)
    if renamed:
        notes.append(f"named {len(renamed)} unnamed or duplicate-named nodes")
        if layer_map:
            layer_map.rename_nodes(renamed)
    pushed, note = push_transposes(work) if layout else (work, None)
    if note:
        notes.append(note)
    if pushed is not work:
        if layer_map:
            layer_map.drop_nodes(removed_nodes(work, pushed))
        work, graph = pushed, pushed.graph
    if default_opset(work) >= LAYERNORM_OPSET:
        fused = fuse_layernorm(work)
        if fused:
            count = len(set(fused.values()))
            notes.append(f"fused {count} decomposed layer normalisation(s) into "
                         "LayerNormalization")
            if layer_map:
                layer_map.drop_nodes(fused)
    n = _constants_to_initializers(graph)
    if n:
        notes.append(f"moved {n} weight(s) from Constant nodes to initializers")
    if check_weights:  # after the move: paddle2onnx keeps every weight in a Constant node
        require_finite_weights(work)
    n = _unshare_weights(graph)
    if n:
        notes.append(f"un-shared {n} initializer use(s) that several weighted ops read "
                     "(they would be tied during fine-tuning)")
    notes += _fold_flatten_layout(work, layer_map) if layout else []
    removed = _fold_affine_into_weighted(graph)
    if removed:
        notes.append(f"folded {len(removed)} BatchNorm/affine node(s) into the preceding "
                     "weighted op")
        if layer_map:
            layer_map.drop_nodes(removed)
    if layer_map:
        write_layer_map(work, layer_map)
    return work, notes


def _fold_flatten_layout(model: onnx.ModelProto, layer_map) -> list[str]:
    folded = fold_flatten_transposes(model)
    if not folded:
        return []
    if layer_map:
        layer_map.drop_nodes(folded)
    return [f"folded {len(folded)} layout Transpose(s) before a Flatten into the Dense "
            "weights after it"]


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def _unique_names(graph: onnx.GraphProto) -> dict[str, str]:
    counts = Counter(n.name for n in graph.node)
    used = set(counts)
    renamed: dict[str, str] = {}
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if node.name and counts[node.name] == 1:
            continue
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or f"{node.op_type}_{i}"
        name, k = base, 1
        while name in used:
            name, k = f"{base}__{k}", k + 1
        used.add(name)
        if node.name:
            renamed[node.name] = name
        node.name = name
    return renamed


def _constants_to_initializers(graph: onnx.GraphProto) -> int:
    index = GraphIndex(graph)
    moved = 0
    for node in index.nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        for t in node.input[1:]:
            const = index.constant_nodes.get(t)
            if const is None or index.consumer_count(t) != 1:
                continue
            value = index.constant_value(t)
            if value is None:
                continue
            graph.initializer.append(numpy_helper.from_array(value, name=t))
            graph.node.remove(const)
            moved += 1
    return moved


def _unshare_weights(graph: onnx.GraphProto) -> int:
    index = GraphIndex(graph)
    count = 0
    for name, tensor in list(index.initializers.items()):
        if tensor.data_type != onnx.TensorProto.FLOAT or int(np.prod(tensor.dims)) <= 1:
            continue
        uses = [u for u in index.consumers.get(name, ())
                if u.node.op_type in WEIGHTED_OPS and u.index >= 1]
        if len(uses) < 2:
            continue
        value = numpy_helper.to_array(tensor)
        for use in uses[1:]:
            new_name = f"{name}__{use.node.name}"
            graph.initializer.append(numpy_helper.from_array(value.copy(), name=new_name))
            use.node.input[use.index] = new_name
            count += 1
    return count


def _channel_vector(shape: tuple[int, ...], rank: int, axis: int, channels: int) -> bool:
    """True if a constant of `shape` broadcast to `rank` varies only along `axis`."""
    if len(shape) > rank:
        return False
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    return all(d == 1 or (i == axis % rank and d == channels) for i, d in enumerate(padded))


def _as_channel(value: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)


def _fold_affine_into_weighted(graph: onnx.GraphProto) -> dict[str, str]:
    """Fold chains of per-channel Mul/Add/BatchNormalization into Conv/Gemm/MatMul weights.

    Returns removed node name -> the weighted node it was folded into."""
    removed: dict[str, str] = {}
    index = GraphIndex(graph)
    dead: set[str] = set()
    new_inits: dict[str, np.ndarray] = {}
    for node in index.nodes:
        folded = _fold_chain(index, node, new_inits)
        for victim in folded:
            removed[victim] = node.name
            dead.add(victim)
    if not dead and not new_inits:
        return removed
    kept = [n for n in graph.node if n.name not in dead]
    del graph.node[:]
    graph.node.extend(kept)
    by_name = {t.name: i for i, t in enumerate(graph.initializer)}
    for name, value in new_inits.items():
        tensor = numpy_helper.from_array(value, name=name)
        if name in by_name:
            graph.initializer[by_name[name]].CopyFrom(tensor)
        else:
            graph.initializer.append(tensor)
    used = {t for n in graph.node for t in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return removed


def _fold_target(index: GraphIndex, node: onnx.NodeProto) -> tuple | None:
    """(weight proto, weight channel axis, output channel axis, output rank, channels) of
    a weighted op whose output channels a per-channel affine op can be folded into."""
    op = node.op_type
    axes = ops.output_channel_axis(op, attribute(node, "transB", 0))
    if axes is None or len(node.input) < 2:
        return None
    w_proto = index.initializers.get(node.input[1])
    if w_proto is None or index.consumer_count(node.input[1]) != 1:
        return None
    shape = tuple(w_proto.dims)
    if op == ops.GEMM and (attribute(node, "alpha", 1.0) != 1.0
                           or attribute(node, "beta", 1.0) != 1.0 or attribute(node, "transA", 0)):
        return None
    if op == ops.MATMUL and len(shape) != 2:
        return None
    w_axis, out_axis = axes
    # The output tensor's rank: a Conv output has the weight's rank, Gemm/MatMul outputs are 2-D.
    rank = len(shape) if op == ops.CONV else 2
    return w_proto, w_axis, out_axis, rank, shape[w_axis]


def _fold_chain(index: GraphIndex, node: onnx.NodeProto,
                new_inits: dict[str, np.ndarray]) -> list[str]:
    target = _fold_target(index, node)
    if target is None:
        return []
    op = node.op_type
    w_proto, w_axis, out_axis, rank, channels = target
    scale = np.ones(channels, np.float32)
    shift = np.zeros(channels, np.float32)
    chain: list[onnx.NodeProto] = []
    tensor = node.output[0]
    while index.consumer_count(tensor) == 1 and tensor in index.consumers:
        nxt = index.consumers[tensor][0].node
        step = _affine_step(index, nxt, tensor, rank, out_axis, channels)
        if step is None:
            break
        c, b = step
        scale, shift = scale * c, shift * c + b
        chain.append(nxt)
        tensor = nxt.output[0]
    if not chain:
        return []
    if op == ops.MATMUL and len(chain) == 1 and chain[0].op_type == "Add":
        return []  # a plain bias Add after MatMul: nothing to fold
    # Only now read the weight: most weighted ops have nothing to fold.
    weight = numpy_helper.to_array(w_proto).astype(np.float32)
    bshape = [1] * weight.ndim
    bshape[w_axis] = channels
    new_inits[node.input[1]] = (weight * scale.reshape(bshape)).astype(np.float32)
    if op in ops.BIAS_INPUT:
        bias = np.zeros(channels, np.float32)
        if len(node.input) > 2 and node.input[2]:
            old = index.constant_value(node.input[2])
            if old is None or old.size not in (1, channels):
                return []
            bias = _as_channel(old, channels)
        bias = bias * scale + shift
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] \
            and node.input[2] in index.initializers else f"{node.name}__bias"
        new_inits[bias_name] = bias
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = bias_name
        node.output[0] = tensor
        return [n.name for n in chain]
    # MatMul has no bias input: keep the last node as the bias Add when a shift remains.
    if np.any(shift != 0):
        last = chain[-1]
        bias_name = f"{node.name}__bias"
        new_inits[bias_name] = shift
        del last.input[:]
        last.op_type = "Add"
        del last.attribute[:]
        last.input.extend([node.output[0], bias_name])
        return [n.name for n in chain[:-1]]
    node.output[0] = tensor
    return [n.name for n in chain]


def _affine_step(index: GraphIndex, nxt: onnx.NodeProto, tensor: str, rank: int,
                 out_axis: int, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    if nxt.op_type in ("Mul", "Add") and len(nxt.input) == 2:
        other = nxt.input[1] if nxt.input[0] == tensor else nxt.input[0]
        if other == tensor or not index.is_constant(other):
            return None
        value = index.constant_value(other)
        if value is None or value.dtype != np.float32:
            return None
        if not _channel_vector(value.shape, rank, out_axis, channels):
            return None
        v = _as_channel(value, channels)
        if nxt.op_type == "Mul":
            return v, np.zeros(channels, np.float32)
        return np.ones(channels, np.float32), v
    if nxt.op_type == "BatchNormalization" and nxt.input[0] == tensor and out_axis == 1:
        if len(nxt.output) > 1 and any(nxt.output[1:]):
            return None  # training-mode BN
        return batchnorm_affine(index, nxt)
    return None


def require_float_model(model: onnx.ModelProto, force: bool = False) -> None:
    if has_qdq(model) and not force:
        raise QdqError("the model already contains QuantizeLinear/DequantizeLinear nodes; "
                       "inserting again would double-quantize it (pass --force to insert "
                       "anyway, or start from the float model)")
