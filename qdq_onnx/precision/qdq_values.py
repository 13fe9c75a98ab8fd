"""The values a reduced-precision remainder gives its Q/DQ pairs, chosen so that they
quantize as the FP32 remainder's pairs do.

A QuantizeLinear rounds x / scale to an integer. Any change before it - the scale rounded
to FP16, a weight rounded to FP16 - moves the values near a rounding boundary to the
other integer: measured on converged MNIST CNNs, rounding the scales up and the weights to
FP16 re-drew about half of the INT8 rounding error (logits' SQNR against the FP32
remainder 41 dB) and cost up to 0.35 pt of accuracy against the FP32 remainder on 10k
images, while the error against the float model stayed the same. So:

- each scale takes the nearest value of the type (half an FP16 step: 2^-11 relative) and
  is rounded up only where the nearest would push the calibrated range past the quantized
  type's largest value (a subnormal FP16 scale; BF16 with UINT8), so nothing the FP32
  scale kept in range is clipped;
- each weight a QuantizeLinear reads (a constant, integer quantized type) is stored as
  the value of the type nearest its FP32 value that quantizes, with the reduced scale, to
  the integer the FP32 weight and scale give. About 1% of a large layer's elements move,
  by a few FP16 steps; the integers TensorRT folds from the file are the FP32 file's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.types.float_type import FP16, FloatType, as_fp32, fp16_pair, from_bf16_bits, rounded
from qdq_onnx.types.scheme import SCHEMES

# Integer quantized types whose range numpy knows; a missing zero point means UINT8.
_INTEGER_TYPES = frozenset({onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
                            onnx.TensorProto.UINT16} |
                           {s.element_type for s in SCHEMES.values() if not s.is_float})
# A weight value picked within this many quantization steps of a rounding boundary could
# round either way in a runtime that multiplies by 1 / scale instead of dividing (FP32:
# about 1e-5 steps at 255).
_MARGIN = 1e-4
_NUDGES = 4  # steps of the reduced type tried before the dequantized value itself
_BLOCK = 1 << 18  # weight elements matched per pass (a block in cache: each pass is cheap)


def integer_range(elem_type: int) -> tuple[int, int] | None:
    """(lowest, highest) value of an integer quantized type; None for other types (FP8)."""
    if elem_type not in _INTEGER_TYPES:
        return None
    info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    return int(info.min), int(info.max)


def _zero_point_type(index: GraphIndex, node: onnx.NodeProto) -> int | None:
    if len(node.input) < 3 or not node.input[2]:
        return onnx.TensorProto.UINT8
    zp = index.initializers.get(node.input[2])
    return None if zp is None else zp.data_type


def scale_limits(index: GraphIndex) -> dict[str, float | None]:
    """Scale initializer -> the largest value its pairs quantize to (the most of any of
    its Q/DQ nodes' integer types), or None where one is not an integer type (FP8, whose
    conversion saturates)."""
    limits: dict[str, float | None] = {}
    for node in index.nodes:
        if node.op_type not in ops.QDQ_OPS:
            continue
        elem = _zero_point_type(index, node)
        span = None if elem is None else integer_range(elem)
        name = node.input[1]
        if span is None:
            limits[name] = None
        elif limits.get(name, 0) is not None:
            limits[name] = max(limits.get(name, 0), float(span[1]))
    return limits


def reduced_scale(scale: np.ndarray, kind: FloatType, qmax: float | None) -> np.ndarray:
    """`scale` in `kind` (as FP32): the nearest value, or the next one up where the
    nearest is below `scale` and either subnormal in `kind` or so far below that the
    calibrated range (qmax * scale) would quantize past `qmax` (None: a saturating float
    type). Never zero."""
    s = np.maximum(np.asarray(scale, dtype=np.float32), np.float32(kind.min_positive))
    out = rounded(s, kind)
    ok = (out >= s) | (s >= np.float32(kind.min_normal))
    if qmax is not None:
        ok &= (out >= s) | (qmax * (s.astype(np.float64) / out) < qmax + 0.5)
    while not ok.all():
        out = np.where(ok, out, _neighbour(out, np.float32(np.inf), kind))
        ok |= out >= s
    return out.astype(np.float32)


def _bits(values: np.ndarray, kind: FloatType) -> np.ndarray:
    """The 16-bit patterns of values exactly representable in `kind` (FP16 or BF16)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    if kind.elem_type == FP16.elem_type:
        return v.astype(np.float16).view(np.uint16).astype(np.int32)
    return (v.view(np.uint32) >> 16).astype(np.int32)


def _ordered(bits: np.ndarray) -> np.ndarray:
    """16-bit float patterns as integers in the order of their values (+0 and -0 both 0)."""
    return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)


def _from_ordered(ordered: np.ndarray, kind: FloatType) -> np.ndarray:
    """`_ordered`'s inverse, as FP32 values."""
    bits = np.where(ordered < 0, (-ordered) | 0x8000, ordered).astype(np.uint16)
    if kind.elem_type == FP16.elem_type:
        return bits.view(np.float16).astype(np.float32)
    return from_bf16_bits(bits)


def _neighbour(values: np.ndarray, toward: np.ndarray, kind: FloatType) -> np.ndarray:
    """The next value of `kind` after each of `values` (representable) toward `toward`."""
    here = _ordered(_bits(values, kind))
    there = _ordered(_bits(rounded(np.broadcast_to(toward, np.shape(values)), kind), kind))
    return _from_ordered(here + np.sign(there - here), kind)


@dataclass(frozen=True)
class WeightQuantizer:
    """A constant weight's QuantizeLinear: its scale and zero point initializers, the axis
    of a per-channel scale and the integer range of its type."""

    scale: str
    zero_point: str | None
    axis: int
    span: tuple[int, int]


def weight_quantizers(index: GraphIndex) -> dict[str, WeightQuantizer]:
    """FP32 initializer -> its QuantizeLinear, for each initializer that only
    QuantizeLinear nodes read (as their input, all with the same constant scale, zero
    point and axis, integer type, no blocks)."""
    found: dict[str, WeightQuantizer] = {}
    for name, proto in index.initializers.items():
        uses = index.consumers.get(name, [])
        if proto.data_type != onnx.TensorProto.FLOAT or not uses:
            continue
        seen = set()
        for use in uses:
            q = use.node
            if q.op_type != ops.QUANTIZE or use.index != 0 or q.input[1] not in \
                    index.initializers or attribute(q, "block_size", 0):
                break
            elem = _zero_point_type(index, q)
            span = None if elem is None else integer_range(elem)
            zp = q.input[2] if len(q.input) > 2 and q.input[2] else None
            if span is None or (zp is not None and zp not in index.initializers):
                break
            seen.add(WeightQuantizer(q.input[1], zp, int(attribute(q, "axis", 1)), span))
        else:
            if len(seen) == 1:
                found[name] = seen.pop()
    return found


def matched_weight(index: GraphIndex, name: str, quantizer: WeightQuantizer,
                   kind: FloatType, qmax: float | None) -> np.ndarray:
    """The weight `name` in `kind`: each element the value nearest its FP32 value that
    `quantizer` with the reduced scale maps to the integer the FP32 weight and scale give
    (the dequantized value where no near one does). Returned as the file stores it: a
    float16 array for FP16, float32 (BF16 values) for BF16. Done a block of rows at a
    time, so a multi-GB weight needs little more memory than its copy."""
    w = as_fp32(index.initializers[name])
    s32 = as_fp32(index.initializers[quantizer.scale])
    zp = np.zeros((), np.float32) if quantizer.zero_point is None else \
        as_fp32(index.initializers[quantizer.zero_point])
    shape = [1] * w.ndim
    if s32.ndim and w.ndim:
        shape[quantizer.axis % w.ndim] = -1
    s32, zp = s32.reshape(shape), zp.reshape(shape) if zp.ndim else zp
    s = reduced_scale(s32, kind, qmax)
    if w.ndim == 0 or w.size == 0:
        return _storage(_match_all(w, s32, s, zp, quantizer.span, kind), kind)
    return _match(w, s32, s, zp, quantizer.span, kind)


def _blocks(w: np.ndarray):
    """(rows, cut, flat offset) of `w` a block of rows at a time; `cut` takes a per-row
    (axis 0) scale's rows and leaves any other scale whole."""
    rows = max(1, _BLOCK // max(1, w[0].size))
    for i in range(0, w.shape[0], rows):
        part = slice(i, i + rows)

        def cut(a, part=part):
            return a[part] if a.ndim and a.shape[0] > 1 else a

        yield part, cut, i * w[0].size


def _storage_dtype(kind: FloatType) -> type:
    return np.float16 if kind.elem_type == FP16.elem_type else np.float32


def _storage(values: np.ndarray, kind: FloatType) -> np.ndarray:
    return values.astype(_storage_dtype(kind), copy=False)


def _hits(v, scale, zp, want, span) -> np.ndarray:
    """Where QuantizeLinear(v, scale, zp) gives `want`, clear of a rounding boundary."""
    q = v / scale
    if zp.any():
        q += zp
    r = np.rint(q)
    q -= r
    np.abs(q, out=q)
    clear = q < 0.5 - _MARGIN
    saturated = r < span[0]
    saturated |= r > span[1]
    clear |= saturated
    np.clip(r, *span, out=r)
    clear &= r == want
    return clear


def _match(w, s32, s, zp, span, kind) -> np.ndarray:
    """`_match_all`'s values in storage dtype, a block of rows at a time; for FP16 testing
    in full only the elements that can miss (`_candidates`), all of a weight's at once (one
    call's fixed cost per weight, not per block). `_match_all` is elementwise, so running
    it on a superset of the misses gives the same values as running it on everything."""
    out = np.empty(w.shape, _storage_dtype(kind))
    if kind.elem_type != FP16.elem_type:
        for part, cut, _ in _blocks(w):
            out[part] = _storage(_match_all(w[part], cut(s32), cut(s), cut(zp), span, kind),
                                 kind)
        return out
    found = []
    for part, cut, offset in _blocks(w):
        out[part], maybe = _candidates(w[part], cut(s32), cut(s), cut(zp))
        found.append(maybe + offset)
    maybe = np.concatenate(found)
    if maybe.size:
        part = [_at(a, w.shape, maybe) for a in (s32, s, zp)]
        out.reshape(-1)[maybe] = _match_all(w.reshape(-1)[maybe], *part, span, kind)
    return out


def _candidates(w, s32, s, zp) -> tuple[np.ndarray, np.ndarray]:
    """`w` rounded to FP16, and the flat indices of its elements that can miss: where the
    rounded weight quantizes, with the reduced scale, to within 0.5 - _MARGIN of the FP32
    integer (before saturation), it gives that integer clear of a boundary, so it is a
    hit."""
    out, q = fp16_pair(w)
    with np.errstate(all="ignore"):  # an overflow or NaN is a candidate, tested in full
        q /= s  # float32, as _hits computes it from the FP32 copy
        want = np.rint(w / s32)
        if zp.any():
            q += zp
            want += zp
        q -= want
        np.abs(q, out=q)
        return out, np.flatnonzero(~(q < 0.5 - _MARGIN))


def _match_all(w, s32, s, zp, span, kind) -> np.ndarray:
    want = np.rint(w / s32)
    if zp.any():
        want += zp
    np.clip(want, *span, out=want)
    out = rounded(w, kind)
    # flat indices of the misses (about 1% of a layer): one index array, not one per axis
    miss = np.flatnonzero(~_hits(out, s, zp, want, span))
    if not miss.size:
        return out
    scale, point, goal = _at(s, w.shape, miss), _at(zp, w.shape, miss), want.reshape(-1)[miss]
    target = ((goal - point) * scale).astype(np.float32)
    out.reshape(-1)[miss] = _nudged(out.reshape(-1)[miss], target, scale, point, goal, span,
                                    kind)
    return out


def _nudged(start, target, scale, point, goal, span, kind) -> np.ndarray:
    """For each miss, the first of up to _NUDGES steps of `kind` from `start` toward
    `target` (the dequantized value) that quantizes to `goal`, else `target` rounded to
    `kind` where that does, else `start`. Only the misses still open are stepped."""
    exact = rounded(target, kind)
    best = start.copy()
    here, there = _ordered(_bits(start, kind)), _ordered(_bits(exact, kind))
    left = np.arange(start.size)
    for _ in range(_NUDGES):
        if not left.size:
            break
        here[left] += np.sign(there[left] - here[left])
        trial = _from_ordered(here[left], kind)
        good = _hits(trial, scale[left], point[left], goal[left], span)
        best[left[good]] = trial[good]
        left = left[~good]
    if left.size:
        good = _hits(exact[left], scale[left], point[left], goal[left], span)
        best[left[good]] = exact[left[good]]
    return best


def _at(a: np.ndarray, shape: tuple[int, ...], flat: np.ndarray) -> np.ndarray:
    """`a` (a scalar, or per channel along one axis of `shape`) at the flat indices `flat`
    of an array of `shape`, without broadcasting it to the whole shape."""
    a = a.reshape((1,) * (len(shape) - a.ndim) + a.shape)  # numpy aligns on the right
    wide = [i for i, d in enumerate(a.shape) if d > 1]
    if not wide:
        return np.full(flat.shape, a.reshape(-1)[0] if a.size else 0, np.float32)
    if len(wide) > 1:
        return np.broadcast_to(a, shape).reshape(-1)[flat]
    axis = wide[0]
    stride = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return a.reshape(-1)[(flat // stride) % shape[axis]]


__all__ = ["WeightQuantizer", "integer_range", "matched_weight", "reduced_scale",
           "scale_limits", "weight_quantizers"]
