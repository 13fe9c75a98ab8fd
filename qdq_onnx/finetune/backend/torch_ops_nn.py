"""The torch backend's op table, part 3: convolutions, pooling, normalisation, Resize and
the loss op. Padding follows ONNX (explicit begin/end pads or auto_pad), so asymmetric pads
are applied before the op; Resize reuses the positions and weights of the lowering
(`lowering_gather.axis_taps`), the one definition of ONNX Resize in the project."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.backend.torch_ops import aligned, ints, op
from qdq_onnx.finetune.lowering_gather import axis_taps, resize_settings
from qdq_onnx.graph import ops

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _auto_pads(attrs, sizes, kernel, strides, dilations) -> list[int]:
    """(begin..., end...) pads of a window op, from `pads` or `auto_pad` (SAME_* pad so the
    output is ceil(in / stride); SAME_UPPER puts the odd element at the end)."""
    n = len(sizes)
    mode = attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * 2 * n))
    if mode == "VALID":
        return [0] * 2 * n
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def _window(attrs, x, kernel):
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = _auto_pads(attrs, list(x.shape[2:]), kernel, strides, dilations)
    return strides, dilations, pads


def _padded(x, pads, value=0.0):
    """`x` padded by (begin..., end...) over its spatial axes; symmetric pads return None
    for the op's own padding argument."""
    n = len(pads) // 2
    if pads[:n] == pads[n:]:
        return x, pads[:n]
    spec = [p for a in reversed(range(n)) for p in (pads[a], pads[n + a])]
    return F.pad(x, spec, value=value), [0] * n


@op(ops.CONV)
def conv(ctx, attrs, x, w, b=None):
    x, w, b = aligned(x, w, b)
    kernel = list(w.shape[2:])
    strides, dilations, pads = _window(attrs, x, kernel)
    x, padding = _padded(x, pads)
    return _CONV[len(kernel)](x, w, b, strides, padding, dilations, attrs.get("group", 1))


@op(ops.CONV_TRANSPOSE)
def conv_transpose(ctx, attrs, x, w, b=None):
    x, w, b = aligned(x, w, b)
    kernel = list(w.shape[2:])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    extra = list(attrs.get("output_padding", [0] * n))
    full = [(i - 1) * s + (k - 1) * d + 1 + e
            for i, s, k, d, e in zip(x.shape[2:], strides, kernel, dilations, extra)]
    pads = list(attrs.get("pads", [0] * 2 * n))
    target = attrs.get("output_shape")
    mode = attrs.get("auto_pad", "NOTSET")
    if target or mode in ("SAME_UPPER", "SAME_LOWER"):
        target = list(target)[-n:] if target else [i * s for i, s in zip(x.shape[2:], strides)]
        total = [f - t for f, t in zip(full, target)]
        upper = mode == "SAME_UPPER"
        pads = ([t // 2 if upper else t - t // 2 for t in total]
                + [t - t // 2 if upper else t // 2 for t in total])
    y = _CONV_T[n](x, w, None, strides, 0, extra, attrs.get("group", 1), dilations)
    index = (slice(None), slice(None)) + tuple(slice(pads[a], f - pads[n + a])
                                               for a, f in enumerate(full))
    y = y[index]
    return y if b is None else y + b.reshape(1, -1, *([1] * n))


@op("MaxPool")
def max_pool(ctx, attrs, x):
    kernel = list(attrs["kernel_shape"])
    strides, dilations, pads = _window(attrs, x, kernel)
    x, padding = _padded(x, pads, -math.inf)
    if any(2 * p > k for p, k in zip(padding, kernel)):  # torch caps pads at half a window
        x, padding = _padded(x, padding + padding, -math.inf)[0], [0] * len(kernel)
    return _MAX[len(kernel)](x, kernel, strides, padding, dilations,
                             ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _sum_pool(x, kernel, strides, ceil):
    """Window sums (avg_pool without its division; 1-D as 2-D)."""
    if len(kernel) == 1:
        return _sum_pool(x.unsqueeze(-1), kernel + [1], strides + [1], ceil).squeeze(-1)
    pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
    return pool(x, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)


@op("AveragePool")
def average_pool(ctx, attrs, x):
    kernel = list(attrs["kernel_shape"])
    strides, dilations, pads = _window(attrs, x, kernel)
    if any(d != 1 for d in dilations):
        raise QdqError("AveragePool with dilations is not supported by the torch backend")
    ceil = bool(attrs.get("ceil_mode", 0))
    n = len(kernel)
    spec = [p for a in reversed(range(n)) for p in (pads[a], pads[n + a])]
    sums = _sum_pool(F.pad(x, spec), kernel, strides, ceil)
    if attrs.get("count_include_pad", 0):  # onnxruntime divides by the whole window, even
        return sums / float(math.prod(kernel))  # one a ceil-mode edge cuts
    # else by the window's elements inside the input, pooled from a mask of its geometry
    mask = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device), spec)
    return sums / _sum_pool(mask, kernel, strides, ceil)


@op("GlobalAveragePool")
def global_average_pool(ctx, attrs, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(ctx, attrs, x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# -- normalisation ---------------------------------------------------------------------
def _channel(t, x):
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


@op("BatchNormalization")
def batch_normalization(ctx, attrs, x, scale, bias, mean, var):
    x, scale, bias, mean, var = aligned(x, scale, bias, mean, var)
    inv = scale / torch.sqrt(var + attrs.get("epsilon", 1e-5))
    return x * _channel(inv, x) + _channel(bias - mean * inv, x)


@op("InstanceNormalization")
def instance_normalization(ctx, attrs, x, scale, bias):
    x, scale, bias = aligned(x, scale, bias)
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


@op("LayerNormalization")
def layer_normalization(ctx, attrs, x, scale, bias=None):
    x, scale, bias = aligned(x, scale, bias)
    axis = attrs.get("axis", -1) % x.dim()
    dims = tuple(range(axis, x.dim()))
    eps = attrs.get("epsilon", 1e-5)
    mean = x.mean(dim=dims, keepdim=True)
    centred = x - mean
    inv = torch.rsqrt((centred * centred).mean(dim=dims, keepdim=True) + eps)
    y = centred * inv * scale
    return (y if bias is None else y + bias), mean, inv


@op("GroupNormalization")
def group_normalization(ctx, attrs, x, scale, bias):
    x, scale, bias = aligned(x, scale, bias)
    groups = attrs["num_groups"]
    channels = x.shape[1]
    if scale.numel() != channels:  # opset 18: one scale per group
        scale = scale.repeat_interleave(channels // groups)
        bias = bias.repeat_interleave(channels // groups)
    return F.group_norm(x, groups, scale, bias, attrs.get("epsilon", 1e-5))


@op("LRN")
def lrn(ctx, attrs, x):
    return F.local_response_norm(x, attrs["size"], attrs.get("alpha", 1e-4),
                                 attrs.get("beta", 0.75), attrs.get("bias", 1.0))


# -- Resize ----------------------------------------------------------------------------
def _resize_geometry(ctx, attrs, x, scales_in, sizes_in) -> tuple[list[float], list[int]]:
    rank = x.dim()
    axes = [a % rank for a in attrs.get("axes", range(rank))]
    scales = [1.0] * rank
    dims = list(x.shape)
    given = [] if scales_in is None else [float(v) for v in scales_in.reshape(-1).tolist()]
    if given:
        for a, s in zip(axes if len(given) == len(axes) else range(rank), given):
            scales[a] = s
            dims[a] = int(math.floor(x.shape[a] * s))
        return scales, dims
    for a, d in zip(axes, ints(sizes_in)):
        dims[a], scales[a] = d, d / x.shape[a]
    return scales, dims


@op("Resize", "Upsample")
def resize(ctx, attrs, x, *rest):
    mode, transform, nearest, cubic_a, exclude = resize_settings(ctx.node, ctx.opset)
    if ctx.node.op_type == "Upsample" or ctx.opset < 11:
        scales_in = rest[0] if rest else torch.tensor(attrs["scales"])
        sizes_in = None
    else:
        scales_in = rest[1] if len(rest) > 1 else None
        sizes_in = rest[2] if len(rest) > 2 else None
        if scales_in is not None and scales_in.numel() == 0:
            scales_in = None
    scales, dims = _resize_geometry(ctx, attrs, x, scales_in, sizes_in)
    for a, (n_in, n_out, s) in enumerate(zip(x.shape, dims, scales)):
        if n_in == n_out and s == 1.0:
            continue
        taps = axis_taps(n_in, n_out, s, mode, transform, nearest, cubic_a, exclude)
        out = None
        for idx, weight in taps:
            picked = x.index_select(a, torch.as_tensor(idx, device=x.device))
            if not np.all(weight == 1):
                shape = [1] * x.dim()
                shape[a] = n_out
                picked = picked * torch.as_tensor(weight, dtype=x.dtype,
                                                  device=x.device).reshape(shape)
            out = picked if out is None else out + picked
        x = out
    return x


# -- the loss op -----------------------------------------------------------------------
@op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(ctx, attrs, scores, labels, weights=None):
    scores, labels, weights = aligned(scores, labels, weights)
    log_prob = torch.log_softmax(scores, dim=1)
    ignore = attrs.get("ignore_index")
    loss = F.nll_loss(log_prob, labels.long(), weight=weights,
                      ignore_index=-100 if ignore is None else ignore,
                      reduction=attrs.get("reduction", "mean"))
    return loss, log_prob
