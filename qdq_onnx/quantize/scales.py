"""Scale arithmetic shared by insertion, calibration and training, for a precision scheme
(in the scheme each call names: TensorRT's symmetric INT8 has zero point 0, scale = amax / qmax)."""

from __future__ import annotations

import numpy as np

from qdq_onnx.types.scheme import Scheme

MIN_SCALE = np.float32(1e-8)  # a zero scale is invalid; an all-zero channel quantizes to 0 anyway
PLACEHOLDER_AMAX = 6.0  # the original toolkit's initial range (+-6) before any data is seen


def reduce_axes(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis)


def weight_scale(weight: np.ndarray, axis: int | None, qmax: int) -> np.ndarray:
    """Per-channel scale as TensorRT computes it: float32 max|w| / qmax along every axis but
    `axis` (kept with size 1 so it broadcasts; `axis=None`: one per-tensor scale), floored at
    MIN_SCALE. Insertion, the training graph and export all use this one function, so they
    agree bit for bit."""
    axes = tuple(range(weight.ndim)) if axis is None else reduce_axes(weight.ndim, axis)
    # max |w| as the larger of max(w) and -min(w): the same value, no |w| copy of the weight
    amax = np.maximum(np.max(weight, axis=axes, keepdims=True),
                      -np.min(weight, axis=axes, keepdims=True)).astype(np.float32)
    return np.maximum(amax / np.float32(qmax), MIN_SCALE).astype(np.float32)


def amax_to_scale(amax: np.ndarray | float, scheme: Scheme) -> tuple[np.ndarray, int]:
    """Scale(s) for `amax` in `scheme`; returns (scale, number of entries clamped to
    MIN_SCALE)."""
    qmax = np.float32(scheme.qmax)
    a = np.asarray(amax, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("amax holds NaN or Inf")
    scale = (a / qmax).astype(np.float32)
    tiny = scale < MIN_SCALE
    return np.where(tiny, MIN_SCALE, scale).astype(np.float32), int(np.count_nonzero(tiny))


def quantize_dequantize(x: np.ndarray, scale: np.ndarray, scheme: Scheme
                        ) -> tuple[np.ndarray, int]:
    """Reference Q->DQ in numpy (round half to even, saturate), zero point 0, and the number
    of values that saturated."""
    if scheme.is_float:
        v = np.asarray(x / scale, np.float32)
        clipped = int(np.count_nonzero(np.abs(v) > scheme.qmax))
        return (fp8_round(v, scheme.qmax) * scale).astype(np.float32), clipped
    q = np.rint(x / scale)
    lo, hi = scheme.qmin, scheme.qmax
    clipped = int(np.count_nonzero((q < lo) | (q > hi)))
    return (np.clip(q, lo, hi) * scale).astype(np.float32), clipped


def fp8_round(v: np.ndarray, limit: float = 448.0) -> np.ndarray:
    """`v` rounded to FP8 E4M3 (round half to even, saturating at +-`limit`), as FP32:
    the grid step is 2**(e - 3) for the exponent e = floor(log2 |v|) clipped to [-6, 8]
    (below 2**-6 the subnormal step 2**-9)."""
    v = np.asarray(v, np.float32)
    with np.errstate(divide="ignore"):
        e = np.clip(np.floor(np.log2(np.abs(v))), -6, 8)
    step = np.exp2(e - 3).astype(np.float32)
    return np.clip(np.rint(v / step) * step, -limit, limit).astype(np.float32)


def fake_quant(x: np.ndarray, scale: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Reference Q->DQ in numpy (round half to even, saturate), zero point 0."""
    return quantize_dequantize(x, scale, scheme)[0]


def broadcast_scale(scale: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """A Q/DQ scale shaped to broadcast against a tensor of rank `ndim` (per-channel on
    `axis`, or a scalar)."""
    if scale.size == 1 or axis is None:
        return scale.reshape(())
    shape = [1] * ndim
    shape[axis] = scale.size
    return scale.reshape(shape)
