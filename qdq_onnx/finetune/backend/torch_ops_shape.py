"""The torch backend's op table, part 2: ops that move, select or make data (shapes,
reshapes, slices, gathers, padding, constants). Shapes are CPU int64 tensors, read from
the tensors' sizes, so shape arithmetic never synchronises with a GPU."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.backend.torch_ops import aligned, ints, op
from qdq_onnx.finetune.lowering_gather import pad_positions


def shape_tensor(values: list[int] | tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.int64)


@op("Shape")
def shape(ctx, attrs, x):
    dims = list(x.shape)
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return shape_tensor(dims[start:end])


@op("Size")
def size(ctx, attrs, x):
    return torch.tensor(x.numel(), dtype=torch.int64)


@op("Constant")
def constant(ctx, attrs):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            return ctx.constant(np.asarray(attrs[key]))
    raise QdqError(f"Constant with attributes {sorted(attrs)} is not supported")


@op("ConstantOfShape")
def constant_of_shape(ctx, attrs, dims):
    value = attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return torch.full(ints(dims), fill[0].item(), dtype=ctx.numpy_dtype(fill.dtype),
                      device=ctx.device if fill.dtype.kind == "f" else "cpu")


@op("Range")
def range_(ctx, attrs, start, limit, delta):
    start, limit, delta = aligned(start, limit, delta)
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype,
                        device=start.device)


@op("Reshape")
def reshape(ctx, attrs, x, target):
    dims = ints(target)
    if not attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def flatten(ctx, attrs, x):
    axis = attrs.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(lead, -1) if x.numel() else x.reshape(lead, int(np.prod(x.shape[axis:])))


@op("Transpose")
def transpose(ctx, attrs, x):
    perm = attrs.get("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


def _axes(ctx, attrs, axes_in, since: int = 13) -> list[int] | None:
    return ints(axes_in) if ctx.opset >= since and axes_in is not None else attrs.get("axes")


@op("Squeeze")
def squeeze(ctx, attrs, x, axes_in=None):
    axes = _axes(ctx, attrs, axes_in)
    if not axes:
        return x.squeeze() if x.dim() else x
    for a in sorted({a % x.dim() for a in axes}, reverse=True):
        x = x.squeeze(a)
    return x


@op("Unsqueeze")
def unsqueeze(ctx, attrs, x, axes_in=None):
    axes = _axes(ctx, attrs, axes_in)
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Concat")
def concat(ctx, attrs, *xs):
    xs = [x for x in aligned(*xs) if x is not None]
    dtype = xs[0].dtype
    return torch.cat([x.to(dtype) for x in xs], dim=attrs["axis"] % xs[0].dim())


@op("Split")
def split(ctx, attrs, x, sizes_in=None):
    axis = attrs.get("axis", 0) % x.dim()
    sizes = ints(sizes_in) if ctx.opset >= 13 and sizes_in is not None else attrs.get("split")
    if not sizes:
        n = attrs.get("num_outputs") or ctx.outputs
        chunk = -(-x.shape[axis] // n)  # opset 18: the last part may be smaller
        sizes = [min(chunk, x.shape[axis] - k * chunk) for k in range(n)]
    return tuple(torch.split(x, list(sizes), dim=axis))


@op("Slice")
def slice_(ctx, attrs, x, starts=None, ends=None, axes=None, steps=None):
    if ctx.opset < 10:
        starts, ends, axes = attrs["starts"], attrs["ends"], attrs.get("axes")
        steps = None
    else:
        starts, ends = ints(starts), ints(ends)
        axes, steps = (ints(axes) or None), (ints(steps) or None)
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index: list = [slice(None)] * x.dim()
    for s, e, a, k in zip(starts, ends, axes, steps):
        a %= x.dim()
        n = x.shape[a]
        if k > 0:
            s = min(max(s + n if s < 0 else s, 0), n)
            e = min(max(e + n if e < 0 else e, 0), n)
            index[a] = slice(s, max(s, e), k)
        else:  # a negative step: torch slices forward only, so pick the positions
            s = min(max(s + n if s < 0 else s, -1), n - 1)
            e = min(max(e + n if e < 0 else e, -1), n - 1)
            picked = list(range(s, e, k))
            index[a] = picked or slice(0, 0)
    out = x
    for a, sel in enumerate(index):
        if isinstance(sel, list):
            out = out.index_select(a, torch.tensor(sel, dtype=torch.int64, device=out.device))
        elif sel != slice(None):
            out = out[(slice(None),) * a + (sel,)]
    return out


@op("Gather")
def gather(ctx, attrs, x, indices):
    x, indices = aligned(x, indices)
    axis = attrs.get("axis", 0) % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


@op("GatherElements")
def gather_elements(ctx, attrs, x, indices):
    x, indices = aligned(x, indices)
    axis = attrs.get("axis", 0) % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    return torch.gather(x, axis, idx)


@op("GatherND")
def gather_nd(ctx, attrs, x, indices):
    x, indices = aligned(x, indices)
    b = attrs.get("batch_dims", 0)
    if b:
        raise QdqError("GatherND with batch_dims is not supported by the torch backend")
    k = indices.shape[-1]
    idx = indices.long().reshape(-1, k)
    out = x[tuple(idx[:, j] for j in range(k))]
    return out.reshape((*indices.shape[:-1], *x.shape[k:]))


@op("ScatterND")
def scatter_nd(ctx, attrs, x, indices, updates):
    x, indices, updates = aligned(x, indices, updates)
    k = indices.shape[-1]
    idx = indices.long().reshape(-1, k)
    out = x.clone()
    upd = updates.reshape(-1, *x.shape[k:])
    key = tuple(idx[:, j] for j in range(k))
    reduction = attrs.get("reduction", "none")
    if reduction == "add":
        return out.index_put(key, upd, accumulate=True)
    return out.index_put(key, upd)


@op("ScatterElements")
def scatter_elements(ctx, attrs, x, indices, updates):
    x, indices, updates = aligned(x, indices, updates)
    axis = attrs.get("axis", 0) % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    if attrs.get("reduction", "none") == "add":
        return x.scatter_add(axis, idx, updates)
    return x.scatter(axis, idx, updates)


@op("Expand")
def expand(ctx, attrs, x, dims):
    target = ints(dims)
    rank = max(x.dim(), len(target))
    target = [1] * (rank - len(target)) + target
    have = [1] * (rank - x.dim()) + list(x.shape)
    out = [h if t == 1 else t for h, t in zip(have, target)]  # ONNX broadcasts both ways
    return x.reshape(have).expand(out)


@op("Tile")
def tile(ctx, attrs, x, repeats):
    return x.repeat(*ints(repeats))


@op("Pad")
def pad(ctx, attrs, x, pads_in=None, value=None, axes_in=None):
    rank = x.dim()
    if ctx.opset < 11:
        pads, fill = list(attrs.get("pads")), attrs.get("value", 0.0)
    else:
        pads = ints(pads_in)
        fill = 0.0 if value is None or value.numel() == 0 else value.reshape(()).item()
        if axes_in is not None:
            axes = [a % rank for a in ints(axes_in)]
            full = [0] * 2 * rank
            for k, a in enumerate(axes):
                full[a], full[rank + a] = pads[k], pads[len(axes) + k]
            pads = full
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        # F.pad lists (begin, end) from the last axis backwards; negative amounts crop
        spec = [p for a in reversed(range(rank)) for p in (pads[a], pads[rank + a])]
        return F.pad(x, spec, value=fill)
    for a in range(rank):
        begin, end = pads[a], pads[rank + a]
        if begin or end:
            where = pad_positions(x.shape[a], begin, end, mode)
            x = x.index_select(a, torch.as_tensor(where, dtype=torch.int64, device=x.device))
    return x


@op("DepthToSpace")
def depth_to_space(ctx, attrs, x):
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def space_to_depth(ctx, attrs, x):
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@op("OneHot")
def one_hot(ctx, attrs, indices, depth, values):
    indices, values = aligned(indices, values)
    d = ints(depth)[0]
    idx = torch.where(indices < 0, indices + d, indices).long()
    hot = F.one_hot(idx, d)
    axis = attrs.get("axis", -1)
    if axis != -1:
        hot = hot.movedim(-1, axis % hot.dim())
    off, on = values[0], values[1]
    return torch.where(hot.bool(), on, off)


@op("NonZero")
def non_zero(ctx, attrs, x):
    return torch.nonzero(x).t().contiguous()


@op("Trilu")
def trilu(ctx, attrs, x, k=None):
    shift = ints(k)[0] if k is not None else 0
    return torch.triu(x, shift) if attrs.get("upper", 1) else torch.tril(x, shift)


@op("TopK")
def top_k(ctx, attrs, x, k):
    axis = attrs.get("axis", -1)
    values, idx = torch.topk(x, ints(k)[0], dim=axis, largest=bool(attrs.get("largest", 1)),
                             sorted=bool(attrs.get("sorted", 1)))
    return values, idx.to(torch.int64)
