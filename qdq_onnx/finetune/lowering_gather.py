"""Ops that move data by fixed positions, rewritten as Gather for training.

Resize and Upsample: onnxruntime-training 1.19 has no CPU kernel for ResizeGrad ("Could not
find an implementation for ResizeGrad(1)") and no gradient for Upsample. Both are
separable: along each resized axis an output element is a weighted sum of at most four input
elements (1 for nearest, 2 for linear, 4 for cubic), whose positions and
weights depend only on the sizes and attributes. With the sizes known (from the data, see
`qdq_onnx.finetune.shapes`), each axis becomes Gather (indices fixed) times a fixed weight,
summed over the taps: ops whose gradients onnxruntime-training computes (GatherGrad, Mul,
Add). Positions follow the ONNX definition of Resize (opset 10-19: every
coordinate_transformation_mode but tf_crop_and_resize, every nearest_mode, cubic with
cubic_coeff_a and exclude_outside, `axes`); antialiased downsampling and
keep_aspect_ratio_policy other than stretch are refused with a line saying so.

Split with an output nothing reads: onnxruntime-training's gradient is then wrong (the table
of scripts/gradient_coverage.py: relative error 1.5 against a finite difference; right when
every output is read), so each read output becomes a Slice.

Pad in reflect, edge or wrap mode: its gradient "currently supports constant mode only". Along
each padded axis the output is a Gather of the input at reflected, clamped or wrapped
positions (negative pads crop). Both are exact: a gather copies, and a weighted sum of at most
four taps differs from the op's own arithmetic only in rounding."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.graph.index import attribute

TAG = "__lowered_"  # the rewrite's node names start with the original's and this

RESIZE_OPS = frozenset({"Resize", "Upsample"})


def const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    """Add `value` to `graph` as the initializer `name`; returns the name."""
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


PAD = "Pad"
SPLIT = "Split"


def _text(node: onnx.NodeProto, name: str, default: str) -> str:
    value = attribute(node, name, default)
    return value.decode() if isinstance(value, bytes) else value


def _original(x: np.ndarray, mode: str, scale: float, n_in: int, n_out: int) -> np.ndarray:
    """Input coordinate of each output coordinate `x` (ONNX Resize's transforms)."""
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        offset = n_in / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    raise QdqError(f"Resize coordinate_transformation_mode {mode!r} cannot be fine-tuned "
                   "(its rewrite for training covers half_pixel, half_pixel_symmetric, "
                   "pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel_for_nn)")


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    raise QdqError(f"Resize nearest_mode {mode!r} is not an ONNX nearest mode")


def _cubic_weights(t: np.ndarray, a: float) -> list[np.ndarray]:
    """Keys' cubic convolution weights of the taps at offsets -1, 0, 1, 2 from floor(x)."""
    def kernel(d: np.ndarray) -> np.ndarray:
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    return [kernel(t + 1), kernel(t), kernel(1 - t), kernel(2 - t)]


def axis_taps(n_in: int, n_out: int, scale: float, mode: str, transform: str,
              nearest_mode: str = "round_prefer_floor", cubic_a: float = -0.75,
              exclude_outside: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(indices, weights)] per tap: output element i of the axis is
    sum_k weights_k[i] * input[indices_k[i]] (indices within [0, n_in))."""
    x = _original(np.arange(n_out, dtype=np.float64), transform, scale, n_in, n_out)
    if mode == "nearest":
        idx = np.clip(_nearest(x, nearest_mode), 0, n_in - 1).astype(np.int64)
        return [(idx, np.ones(n_out))]
    if mode == "linear":
        x = np.clip(x, 0, n_in - 1)
        low = np.floor(x)
        t = x - low
        low = low.astype(np.int64)
        return [(low, 1 - t), (np.minimum(low + 1, n_in - 1), t)]
    if mode == "cubic":
        low = np.floor(x)
        weights = _cubic_weights(x - low, cubic_a)
        positions = [low.astype(np.int64) + k for k in (-1, 0, 1, 2)]
        if exclude_outside:
            inside = [(p >= 0) & (p < n_in) for p in positions]
            weights = [w * m for w, m in zip(weights, inside)]
            total = sum(weights)
            weights = [w / total for w in weights]
        return [(np.clip(p, 0, n_in - 1), w) for p, w in zip(positions, weights)]
    raise QdqError(f"Resize mode {mode!r} is not an ONNX Resize mode")


def _is_identity(taps: list[tuple[np.ndarray, np.ndarray]], n_in: int) -> bool:
    """Whether the axis maps every element to itself (scale 1 under this transform)."""
    ramp = np.arange(n_in)
    first, weight = taps[0]
    if len(first) != n_in or not np.array_equal(first, ramp) or not np.all(weight == 1):
        return False
    return all(np.all(w == 0) for _, w in taps[1:])


def resize_settings(node: onnx.NodeProto, opset: int) -> tuple[str, str, str, float, bool]:
    """(mode, coordinate transform, nearest mode, cubic a, exclude_outside) of a Resize
    or Upsample node; Upsample and opset-10 Resize are asymmetric with floor."""
    mode = _text(node, "mode", "nearest")
    if node.op_type == "Upsample" or opset < 11:
        return (mode if mode != "bilinear" else "linear"), "asymmetric", "floor", -0.75, False
    if attribute(node, "antialias", 0):
        raise QdqError(f"{node.name}: an antialiased Resize cannot be fine-tuned yet (its "
                       "rewrite for training covers antialias=0)")
    policy = _text(node, "keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise QdqError(f"{node.name}: a Resize with keep_aspect_ratio_policy={policy!r} "
                       "cannot be fine-tuned yet (its rewrite covers 'stretch')")
    transform = _text(node, "coordinate_transformation_mode", "half_pixel")
    if transform == "tf_crop_and_resize":
        raise QdqError(f"{node.name}: a Resize with coordinate_transformation_mode="
                       "'tf_crop_and_resize' cannot be fine-tuned yet")
    return (mode, transform, _text(node, "nearest_mode", "round_prefer_floor"),
            float(attribute(node, "cubic_coeff_a", -0.75)),
            bool(attribute(node, "exclude_outside", 0)))


def resize_scales(node: onnx.NodeProto, opset: int, values: dict[str, np.ndarray],
                  in_dims: list[int], out_dims: list[int]) -> list[float]:
    """The scale of every axis, as the op's coordinate transform uses it: the given
    scales, or out/in where the output size is given (`values` holds the node's constant or
    probed inputs by name)."""
    rank = len(in_dims)
    if node.op_type == "Upsample" or opset < 11:
        source = node.input[1] if len(node.input) > 1 else None
        given = values.get(source) if source else np.asarray(attribute(node, "scales", []))
        return [float(s) for s in np.asarray(given, np.float32).reshape(-1)]
    scales = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    axes = [a % rank for a in attribute(node, "axes", range(rank))]
    out = [1.0] * rank
    if scales is not None and np.asarray(scales).size:
        for a, s in zip(axes, np.asarray(scales, np.float32).reshape(-1)):
            out[a] = float(s)
        return out
    for a in axes:
        out[a] = out_dims[a] / in_dims[a]
    return out


def lower_resize(node: onnx.NodeProto, opset: int, in_dims: list[int], out_dims: list[int],
                 scales: list[float], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """A Resize/Upsample as Gather-and-weight along each resized axis (sizes all known)."""
    mode, transform, nearest_mode, cubic_a, exclude = resize_settings(node, opset)
    tag = f"{node.name}{TAG}"
    nodes: list[onnx.NodeProto] = []
    current = node.input[0]
    rank = len(in_dims)
    resized = [a for a in range(rank)
               if not _is_identity(axis_taps(in_dims[a], out_dims[a], scales[a], mode,
                                             transform, nearest_mode, cubic_a, exclude),
                                   in_dims[a])]
    if not resized:
        return [helper.make_node("Identity", [current], [node.output[0]], name=f"{tag}same")]
    for n, a in enumerate(resized):
        last = n == len(resized) - 1
        taps = axis_taps(in_dims[a], out_dims[a], scales[a], mode, transform, nearest_mode,
                         cubic_a, exclude)
        taps = [(i, w) for i, w in taps if np.any(w != 0)]
        terms = []
        for k, (indices, weights) in enumerate(taps):
            name = f"{tag}a{a}t{k}"
            const(graph, f"{name}_idx", indices.astype(np.int64))
            gathered = f"{name}_g"
            nodes.append(helper.make_node("Gather", [current, f"{name}_idx"], [gathered],
                                          name=f"{name}_gather", axis=a))
            if np.all(weights == 1):
                terms.append(gathered)
                continue
            shape = [1] * rank
            shape[a] = len(weights)
            const(graph, f"{name}_w", weights.astype(np.float32).reshape(shape))
            nodes.append(helper.make_node("Mul", [gathered, f"{name}_w"], [f"{name}_m"],
                                          name=f"{name}_mul"))
            terms.append(f"{name}_m")
        out = node.output[0] if last else f"{tag}a{a}"
        total = terms[0]
        for k, term in enumerate(terms[1:], 1):
            step = out if k == len(terms) - 1 else f"{tag}a{a}s{k}"
            nodes.append(helper.make_node("Add", [total, term], [step], name=f"{tag}a{a}add{k}"))
            total = step
        if len(terms) == 1:
            nodes.append(helper.make_node("Identity", [total], [out], name=f"{tag}a{a}_out"))
        current = out
    return nodes


def pad_positions(n: int, begin: int, end: int, mode: str) -> np.ndarray:
    """Input position of each output element of one axis of size `n` padded by (begin,
    end) in `mode` (reflect, edge, wrap); negative pads crop."""
    j = np.arange(-begin, n + end)
    if mode == "edge":
        return np.clip(j, 0, n - 1)
    if mode == "wrap":  # a negative pad crops first; the rest wraps over what is left
        start, stop = max(0, -begin), n - max(0, -end)
        j = np.arange(-max(0, begin), stop - start + max(0, end))
        return start + np.mod(j, stop - start)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(j)
        k = np.mod(j, 2 * (n - 1))
        return np.where(k < n, k, 2 * (n - 1) - k)
    raise QdqError(f"Pad mode {mode!r} is not an ONNX Pad mode")


def pad_amounts(node: onnx.NodeProto, opset: int, values: dict[str, np.ndarray],
                rank: int) -> list[int]:
    """(begin..., end...) of every axis: the `pads` attribute (opset < 11) or input, with
    opset 18's `axes`."""
    if opset < 11:
        return [int(p) for p in attribute(node, "pads", [0] * 2 * rank)]
    pads = [int(p) for p in np.asarray(values[node.input[1]]).reshape(-1)]
    axes_input = node.input[3] if len(node.input) > 3 and node.input[3] else None
    if axes_input is None:
        return pads
    axes = [int(a) % rank for a in np.asarray(values[axes_input]).reshape(-1)]
    full = [0] * 2 * rank
    for k, a in enumerate(axes):
        full[a], full[rank + a] = pads[k], pads[len(axes) + k]
    return full


def lower_pad(node: onnx.NodeProto, opset: int, dims: list[int],
              values: dict[str, np.ndarray], graph: onnx.GraphProto
              ) -> list[onnx.NodeProto]:
    """A non-constant Pad as one Gather per padded axis (sizes known)."""
    mode = _text(node, "mode", "constant")
    rank = len(dims)
    pads = pad_amounts(node, opset, values, rank)
    axes = [a for a in range(rank) if pads[a] or pads[rank + a]]
    tag = f"{node.name}{TAG}"
    if not axes:
        return [helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                 name=f"{tag}same")]
    nodes, current = [], node.input[0]
    for k, a in enumerate(axes):
        if dims[a] is None:
            raise QdqError(f"{node.name}: Pad needs the size of axis {a} to be trained")
        idx = f"{tag}a{a}_idx"
        const(graph, idx, pad_positions(dims[a], pads[a], pads[rank + a], mode).astype(np.int64))
        out = node.output[0] if k == len(axes) - 1 else f"{tag}a{a}"
        nodes.append(helper.make_node("Gather", [current, idx], [out], name=f"{tag}a{a}",
                                      axis=a))
        current = out
    return nodes


def lowers_pad(node: onnx.NodeProto) -> bool:
    """Whether a Pad needs the rewrite (its gradient exists for constant mode)."""
    return node.op_type == PAD and _text(node, "mode", "constant") != "constant"


def split_sizes(node: onnx.NodeProto, opset: int, values: dict[str, np.ndarray],
                size: int) -> list[int]:
    """The part sizes of a Split along an axis of `size` (the `split` input or attribute,
    else equal parts as ONNX divides them)."""
    given = values.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if given is None and opset < 13:
        given = attribute(node, "split", None)
    if given is not None and len(given):
        return [int(v) for v in np.asarray(given).reshape(-1)]
    parts = len(node.output)
    step = -(-size // parts)
    return [min(step, max(0, size - k * step)) for k in range(parts)]


def lower_split(node: onnx.NodeProto, opset: int, dims: list[int], read: set[str],
                values: dict[str, np.ndarray], graph: onnx.GraphProto
                ) -> list[onnx.NodeProto]:
    """A Split as one Slice per output that something reads."""
    axis = attribute(node, "axis", 0) % len(dims)
    if dims[axis] is None:
        raise QdqError(f"{node.name}: Split needs the size of axis {axis} to be trained")
    sizes = split_sizes(node, opset, values, int(dims[axis]))
    tag = f"{node.name}{TAG}"
    ends = np.cumsum(sizes)
    nodes = []
    for k, out in enumerate(node.output):
        if out not in read:
            continue
        for what, value in (("start", ends[k] - sizes[k]), ("end", ends[k]), ("axis", axis)):
            const(graph, f"{tag}{k}_{what}", np.array([value], np.int64))
        nodes.append(helper.make_node(
            "Slice", [node.input[0], f"{tag}{k}_start", f"{tag}{k}_end",
                      f"{tag}{k}_axis"], [out], name=f"{tag}{k}"))
    return nodes
