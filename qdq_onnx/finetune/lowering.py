"""Ops onnxruntime-training 1.19 cannot differentiate on the CPU, rewritten in the training
graph into exact equivalents built from ops it trains (the emitted file keeps the original).

- AveragePool: its CPU AveragePoolGrad returns a wrong gradient shape (with padding the
  process dies of SIGFPE). It becomes a depthwise Conv with fixed weights 1/prod(kernel);
  with padding that the average excludes (count_include_pad=0), the window sums are divided
  by a constant map of how many real elements each window covers.
- ConvTranspose: there is no ConvTransposeGrad kernel. It becomes a Conv (stride 1, the same
  dilation) over the input upsampled with zeros (stride - 1 between elements, by Unsqueeze,
  Pad and Reshape) and padded by dilation * (kernel - 1) - pad, with the kernel's channel
  axes swapped (per group) and its spatial axes reversed (Gather), read from the trainable,
  fake-quantized weight so the gradient reaches the weight and its scale.

Both compute the same sums as the original op in another order, so they agree to float32
rounding (tested: within 1e-5 of the output's magnitude), not bit for bit; the training
graph's inference form (for the emit check) puts the original op back.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.lowering_gather import PAD, RESIZE_OPS, SPLIT, TAG
from qdq_onnx.finetune.lowering_gather import const as _const
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import attribute

AVERAGE_POOL = "AveragePool"
ACTIVATIONS = frozenset({"HardSigmoid", "HardSwish", "PRelu"})
EXTREMES = frozenset({"ReduceMax", "ReduceMin", "GlobalMaxPool"})
LOWERED = frozenset({AVERAGE_POOL, ops.CONV_TRANSPOSE, *ACTIVATIONS, *RESIZE_OPS, PAD,
                     *EXTREMES, SPLIT})
# The rewrites that need the sizes of their input (known from the data when symbolic).
NEEDS_SHAPES = frozenset({AVERAGE_POOL, ops.CONV_TRANSPOSE, *RESIZE_OPS, PAD, *EXTREMES,
                          SPLIT})


class ShapesNeeded(QdqError):
    """A rewrite needs a size the graph leaves symbolic: the trainer takes it from the
    training data's shapes and lowers again."""


def _spatial(node: onnx.NodeProto, dims: list | None) -> tuple[int, list[int]]:
    """(channels, spatial sizes) of the node's data input, all known, or QdqError."""
    if not dims or len(dims) < 3 or any(d is None for d in dims[1:]):
        raise ShapesNeeded(f"{node.name}: {node.op_type} needs a known input shape to be "
                           "trained (onnxruntime-training has no gradient for it; the rewrite "
                           f"that replaces it needs the channels and spatial size), got {dims}")
    return int(dims[1]), [int(d) for d in dims[2:]]


def _explicit_pads(node: onnx.NodeProto, sizes: list[int], kernel: list[int],
                   strides: list[int], dilations: list[int]) -> list[int]:
    """The pads of a pooling/conv node with auto_pad resolved (begin..., end...)."""
    auto = attribute(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    r = len(sizes)
    if auto in ("NOTSET", ""):
        return list(attribute(node, "pads", [0] * 2 * r))
    if auto == "VALID":
        return [0] * 2 * r
    begin, end = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(big if auto == "SAME_LOWER" else small)
        end.append(small if auto == "SAME_LOWER" else big)
    return begin + end


def _window_counts(sizes: list[int], kernel: list[int], strides: list[int],
                   pads: list[int]) -> np.ndarray:
    """How many real (unpadded) elements each pooling window covers, shape (1, 1, *out)."""
    r = len(sizes)
    per_axis = []
    for i, (n, k, s) in enumerate(zip(sizes, kernel, strides)):
        begin, end = pads[i], pads[i + r]
        out = (n + begin + end - k) // s + 1
        starts = np.arange(out) * s - begin
        per_axis.append(np.minimum(starts + k, n) - np.maximum(starts, 0))
    counts = per_axis[0].astype(np.float32)
    for axis in per_axis[1:]:
        counts = np.multiply.outer(counts, axis.astype(np.float32))
    return counts.reshape((1, 1, *counts.shape))


def lower_average_pool(node: onnx.NodeProto, dims: list | None,
                       graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """An AveragePool as a depthwise Conv with fixed weights (and a count map)."""
    channels, sizes = _spatial(node, dims)
    if attribute(node, "ceil_mode", 0):
        raise QdqError(f"{node.name}: an AveragePool with ceil_mode=1 cannot be fine-tuned "
                       "(onnxruntime-training has no gradient for AveragePool, and its "
                       "rewrite covers floor mode only)")
    kernel = list(attribute(node, "kernel_shape", []))
    r = len(kernel)
    strides = list(attribute(node, "strides", [1] * r))
    dilations = list(attribute(node, "dilations", [1] * r))
    pads = _explicit_pads(node, sizes, kernel, strides, dilations)
    tag = f"{node.name}{TAG}"
    exclude_pads = any(pads) and not attribute(node, "count_include_pad", 0)
    area = float(np.prod(kernel))
    weight = np.full((channels, 1, *kernel), 1.0 if exclude_pads else 1.0 / area, np.float32)
    w = _const(graph, f"{tag}ones" if exclude_pads else f"{tag}weight", weight)
    conv_out = f"{tag}sum" if exclude_pads else node.output[0]
    nodes = [helper.make_node(ops.CONV, [node.input[0], w], [conv_out], name=f"{tag}conv",
                              group=channels, kernel_shape=kernel, strides=strides,
                              pads=pads, dilations=dilations)]
    if exclude_pads:
        counts = _const(graph, f"{tag}counts", _window_counts(sizes, kernel, strides, pads))
        nodes.append(helper.make_node("Div", [conv_out, counts], [node.output[0]],
                                      name=f"{tag}div"))
    return nodes


def lower_activation(node: onnx.NodeProto, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """HardSigmoid (max(0, min(1, alpha * x + beta))) and HardSwish (x * HardSigmoid(x)
    with alpha 1/6, beta 1/2) as Mul, Add and Clip, PRelu as Relu, Neg, Mul and Sub:
    onnxruntime-training 1.19 registers no gradient builder for them."""
    tag = f"{node.name}{TAG}"
    if node.op_type == "PRelu":
        # Relu(x) - slope * Relu(-x): bit-exact (x - 0 above zero; 0 - slope * -x below).
        x, slope = node.input[0], node.input[1]
        return [helper.make_node("Relu", [x], [f"{tag}pos"], name=f"{tag}pos"),
                helper.make_node("Neg", [x], [f"{tag}negx"], name=f"{tag}negx"),
                helper.make_node("Relu", [f"{tag}negx"], [f"{tag}neg"], name=f"{tag}neg"),
                helper.make_node("Mul", [slope, f"{tag}neg"], [f"{tag}leak"],
                                 name=f"{tag}leak"),
                helper.make_node("Sub", [f"{tag}pos", f"{tag}leak"], [node.output[0]],
                                 name=f"{tag}prelu")]
    if node.op_type == "HardSigmoid":
        alpha, beta = attribute(node, "alpha", 0.2), attribute(node, "beta", 0.5)
    else:
        alpha, beta = 1.0 / 6.0, 0.5
    a = _const(graph, f"{tag}alpha", np.array(alpha, np.float32))
    b = _const(graph, f"{tag}beta", np.array(beta, np.float32))
    zero = _const(graph, f"{tag}zero", np.array(0.0, np.float32))
    one = _const(graph, f"{tag}one", np.array(1.0, np.float32))
    x = node.input[0]
    gate = node.output[0] if node.op_type == "HardSigmoid" else f"{tag}gate"
    nodes = [helper.make_node("Mul", [x, a], [f"{tag}ax"], name=f"{tag}mul"),
             helper.make_node("Add", [f"{tag}ax", b], [f"{tag}axb"], name=f"{tag}add"),
             helper.make_node("Clip", [f"{tag}axb", zero, one], [gate], name=f"{tag}clip")]
    if node.op_type == "HardSwish":
        nodes.append(helper.make_node("Mul", [x, gate], [node.output[0]], name=f"{tag}swish"))
    return nodes


def lower_extreme(node: onnx.NodeProto, dims: list | None, axes: list[int] | None,
                  graph: onnx.GraphProto) -> list[onnx.NodeProto] | None:
    """ReduceMax, ReduceMin and GlobalMaxPool (ReduceMax over the spatial axes, kept) as
    ArgMax/ArgMin and GatherElements: onnxruntime-training has no gradient for the three
    (and its MaxPoolGrad crashes the process), while an index has no gradient to need and
    GatherElements passes it to the element chosen, which is the op's subgradient. The
    reduced axes are moved last (Transpose) and flattened into one; the value is exact.
    The batch axis stays symbolic; `axes` None reduces every axis but the batch's
    (GlobalMaxPool), [] every axis (ReduceMax's default). None for a reduction over the
    batch axis (left as it is)."""
    tag = f"{node.name}{TAG}"
    if not dims or any(d is None for d in dims[1:]):
        raise ShapesNeeded(f"{node.name}: {node.op_type} needs a known input shape to be "
                           f"trained (onnxruntime-training has no gradient for it; the "
                           f"rewrite that replaces it flattens fixed sizes), got {dims}")
    rank = len(dims)
    keep = node.op_type == "GlobalMaxPool" or bool(attribute(node, "keepdims", 1))
    reduced = list(range(2, rank)) if node.op_type == "GlobalMaxPool" else \
        sorted({a % rank for a in (axes or range(rank))})
    if 0 in reduced:
        return None  # over the batch: left as it is (coverage.py refuses it on a gradient path)
    kept = [a for a in range(rank) if a not in reduced]
    size = int(np.prod([dims[a] for a in reduced]))
    flat = [0 if a == 0 else int(dims[a]) for a in kept] + [size]  # 0: copy the batch
    out_shape = [(-1 if a == 0 else int(dims[a])) if a in kept else 1 for a in range(rank)]
    if not keep:
        out_shape = [d for a, d in enumerate(out_shape) if a in kept]
    arg = "ArgMin" if node.op_type == "ReduceMin" else "ArgMax"
    last = len(kept)
    return [
        helper.make_node("Transpose", [node.input[0]], [f"{tag}moved"], name=f"{tag}moved",
                         perm=kept + reduced),
        helper.make_node("Reshape", [f"{tag}moved", _const(graph, f"{tag}flat",
                                                           np.array(flat, np.int64))],
                         [f"{tag}flat_x"], name=f"{tag}flatten"),
        helper.make_node(arg, [f"{tag}flat_x"], [f"{tag}index"], name=f"{tag}index",
                         axis=last, keepdims=1),
        helper.make_node("GatherElements", [f"{tag}flat_x", f"{tag}index"], [f"{tag}value"],
                         name=f"{tag}value", axis=last),
        helper.make_node("Reshape", [f"{tag}value", _const(graph, f"{tag}shape",
                                                           np.array(out_shape, np.int64))],
                         [node.output[0]], name=f"{tag}back")]


def _transposed_kernel(node: onnx.NodeProto, weight: str, shape: list[int],
                       graph: onnx.GraphProto, tag: str) -> tuple[list[onnx.NodeProto], str]:
    """Nodes turning a ConvTranspose kernel (C_in, C_out/g, *k) into the equivalent Conv
    kernel (C_out, C_in/g, *k) with the spatial axes reversed."""
    group = attribute(node, "group", 1)
    c_in, c_out_g, *kernel = shape
    nodes = []
    split = _const(graph, f"{tag}wsplit",
                   np.array([group, c_in // group, c_out_g, *kernel], np.int64))
    merged = _const(graph, f"{tag}wmerge",
                    np.array([group * c_out_g, c_in // group, *kernel], np.int64))
    r = len(kernel)
    nodes += [helper.make_node("Reshape", [weight, split], [f"{tag}w5"], name=f"{tag}wsplit"),
              helper.make_node("Transpose", [f"{tag}w5"], [f"{tag}wt"], name=f"{tag}wswap",
                               perm=[0, 2, 1, *range(3, 3 + r)]),
              helper.make_node("Reshape", [f"{tag}wt", merged], [f"{tag}w0"],
                               name=f"{tag}wmerge")]
    current = f"{tag}w0"
    for i, k in enumerate(kernel):
        if k == 1:
            continue
        rev = _const(graph, f"{tag}rev{i}", np.arange(k - 1, -1, -1, dtype=np.int64))
        nodes.append(helper.make_node("Gather", [current, rev], [f"{tag}w{i + 1}f"],
                                      name=f"{tag}flip{i}", axis=2 + i))
        current = f"{tag}w{i + 1}f"
    return nodes, current


def _zero_upsample(x: str, channels: int, sizes: list[int], strides: list[int],
                   graph: onnx.GraphProto, tag: str) -> tuple[list[onnx.NodeProto], str]:
    """`x` with stride-1 zeros after each element along each spatial axis (Unsqueeze a
    new axis after each, Pad it to the stride, Reshape back)."""
    r = len(sizes)
    axes = [3 + 2 * i for i in range(r)]  # a new axis after each spatial one
    up_pads = [0] * (2 + 2 * r) + [0] * (2 + 2 * r)
    for i, s in enumerate(strides):
        up_pads[(2 + 2 * r) + axes[i]] = s - 1
    target = np.array([-1, channels, *(n * s for n, s in zip(sizes, strides))], np.int64)
    nodes = [
        helper.make_node("Unsqueeze", [x, _const(graph, f"{tag}axes", np.array(axes, np.int64))],
                         [f"{tag}x1"], name=f"{tag}unsqueeze"),
        helper.make_node("Pad", [f"{tag}x1", _const(graph, f"{tag}uppads",
                                                    np.array(up_pads, np.int64))],
                         [f"{tag}x2"], name=f"{tag}zeros"),
        helper.make_node("Reshape", [f"{tag}x2", _const(graph, f"{tag}upshape", target)],
                         [f"{tag}up"], name=f"{tag}upsample")]
    return nodes, f"{tag}up"


def lower_conv_transpose(node: onnx.NodeProto, dims: list | None, weight_shape: list[int],
                         graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """A ConvTranspose as a Conv over the zero-upsampled, padded input."""
    channels, sizes = _spatial(node, dims)
    r = len(sizes)
    kernel = list(attribute(node, "kernel_shape", weight_shape[2:]))
    strides = list(attribute(node, "strides", [1] * r))
    dilations = list(attribute(node, "dilations", [1] * r))
    extra = list(attribute(node, "output_padding", [0] * r))
    if attribute(node, "output_shape", None) is not None or \
            attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"", ""):
        raise QdqError(f"{node.name}: a ConvTranspose with output_shape or auto_pad cannot be "
                       "fine-tuned (onnxruntime-training has no ConvTransposeGrad, and its "
                       "rewrite takes explicit pads)")
    pads = list(attribute(node, "pads", [0] * 2 * r))
    tag = f"{node.name}{TAG}"
    nodes, kernel_out = _transposed_kernel(node, node.input[1], weight_shape, graph, tag)
    x = node.input[0]
    if any(s > 1 for s in strides):
        up, x = _zero_upsample(x, channels, sizes, strides, graph, tag)
        nodes += up
    # The upsampled input ends in stride-1 zeros: they count toward the end padding.
    begin = [d * (k - 1) - p for d, k, p in zip(dilations, kernel, pads[:r])]
    end = [d * (k - 1) - p + e - (s - 1)
           for d, k, p, e, s in zip(dilations, kernel, pads[r:], extra, strides)]
    grow = [max(0, v) for v in begin] + [max(0, v) for v in end]
    if any(grow):
        nodes.append(helper.make_node(
            "Pad", [x, _const(graph, f"{tag}pads", np.array([0, 0, *grow[:r], 0, 0, *grow[r:]],
                                                             np.int64))],
            [f"{tag}padded"], name=f"{tag}pad"))
        x = f"{tag}padded"
    crop = [max(0, -v) for v in begin] + [max(0, -v) for v in end]
    conv_out = f"{tag}conv_out" if any(crop) else node.output[0]
    inputs = [x, kernel_out, *node.input[2:3]]
    nodes.append(helper.make_node(ops.CONV, inputs, [conv_out], name=f"{tag}conv",
                                  group=attribute(node, "group", 1), kernel_shape=kernel,
                                  dilations=dilations, strides=[1] * r))
    if any(crop):
        full = [n * s + g0 + g1 - d * (k - 1)
                for n, s, g0, g1, d, k in zip(sizes, strides, grow[:r], grow[r:], dilations,
                                              kernel)]
        starts = np.array(crop[:r], np.int64)
        ends = np.array([f - c for f, c in zip(full, crop[r:])], np.int64)
        nodes.append(helper.make_node(
            "Slice", [conv_out, _const(graph, f"{tag}starts", starts),
                      _const(graph, f"{tag}ends", ends),
                      _const(graph, f"{tag}sl_axes", np.arange(2, 2 + r, dtype=np.int64))],
            [node.output[0]], name=f"{tag}crop"))
    return nodes


def restore_originals(model: onnx.ModelProto, originals: dict[str, onnx.NodeProto]) -> None:
    """Put the original ops back in place of their rewrites (in place): each takes the
    position of its rewrite's last node, which comes after everything the rewrite read."""
    if not originals:
        return
    by_output = {n.output[0]: n for n in originals.values()}
    keep = []
    for node in model.graph.node:
        owner = node.name.split(TAG)[0] if TAG in node.name else None
        if owner not in originals:
            keep.append(node)
        elif node.output[0] in by_output:
            keep.append(by_output[node.output[0]])
    del model.graph.node[:]
    model.graph.node.extend(keep)
