"""Calibration methods: the clipping threshold (amax) of one tensor from its statistics.

- max: the largest |x| seen (TensorRT deployments' usual choice).
- percentile: the given percentile of |x| (a bin edge of the histogram).
- entropy: TensorRT's KL-divergence calibration as NVIDIA's histogram calibrators implement
  it (pytorch-quantization `calib/histogram.py` `_compute_amax_entropy`, and Model
  Optimizer's copy; the method of Migacz, "8-bit Inference with TensorRT", GTC 2017):
  candidates are the bin edges i = 128 .. bins; the reference distribution is bins [0, i)
  with everything above folded into bin i-1; the quantized one spreads each of 128 chunks
  of [0, i) (chunk of bin j: `digitize(j, linspace(0, i, 129)) - 1`) evenly over its
  non-empty bins; bin 0 takes bin 1's count (so exact zeros do not dominate); the threshold
  is the upper edge of bin i-1 with the smallest KL(P || Q), the largest such on ties.
  Computed in closed form from prefix sums for all candidates at once (no Python loop).
- mse: the threshold minimising the expected squared error over the histogram: rounding
  noise step^2/12 for values inside the range plus the squared clipping distance outside.
- auto: per tensor, the one of these four thresholds with the best SQNR at the output of the
  layer that reads it (`qdq_onnx.quantize.auto`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qdq_onnx.errors import QdqError
from qdq_onnx.quantize.config import METHODS, SINGLE_METHODS
from qdq_onnx.quantize.histogram import TensorStats
from qdq_onnx.types.scheme import Scheme

__all__ = ["CALIBRATION_METHODS", "METHODS", "SINGLE_METHODS", "CalibrationMethod",
           "amax_entropy", "check_method_for", "method_named", "amax_from_stats", "amax_mse",
           "amax_percentile", "entropy_divergences", "entropy_threshold"]


def amax_percentile(s: TensorStats, percentile: float) -> float:
    """The upper edge of the bin holding the `percentile`-th percentile of |x|."""
    total = s.hist.sum()
    if total == 0 or s.upper == 0:
        return s.amax
    cdf = np.cumsum(s.hist) / total
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(min(s.edges[min(idx + 1, s.bins)], s.amax))


def amax_mse(s: TensorStats, scheme: Scheme) -> float:
    """Threshold (a bin edge) minimising the expected squared quantization error of
    `scheme`'s levels."""
    if s.upper == 0 or not s.hist.any():
        return s.amax
    width = s.width
    counts = s.hist.astype(np.float64)
    centers = (np.arange(s.bins) + 0.5) * width
    last = int(np.nonzero(counts)[0][-1]) + 1
    i = np.arange(1, last + 1)  # threshold at the upper edge of bin i-1
    c = i * width
    inside = np.cumsum(counts)[i - 1]
    # Suffix sums over bins >= i of count, count*x, count*x^2 (clipped values).
    s0 = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    s1 = np.concatenate([np.cumsum((counts * centers)[::-1])[::-1], [0.0]])
    s2 = np.concatenate([np.cumsum((counts * centers ** 2)[::-1])[::-1], [0.0]])
    step = c / scheme.qmax
    err = inside * step * step / 12.0 + s2[i] - 2 * c * s1[i] + c * c * s0[i]
    best = float(c[int(np.argmin(err))])
    return float(min(best, s.amax))


def entropy_divergences(hist: np.ndarray, start: int, levels: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(candidate i, KL(P_i || Q_i)) for i = start .. len(hist), vectorised; see the module
    docstring for P and Q. `hist` is used as given (apply the bin-0 rule before)."""
    h = np.asarray(hist, dtype=np.float64)
    n = h.size
    total = h.sum()
    cand = np.arange(start, n + 1)
    cnt = np.concatenate([[0.0], np.cumsum(h)])
    nz = np.concatenate([[0], np.cumsum(h > 0)])
    safe = np.where(h > 0, h, 1.0)
    hlogh = np.concatenate([[0.0], np.cumsum(np.where(h > 0, h * np.log(safe), 0.0))])
    # Chunk c of candidate i holds bins [ceil(space_c), ceil(space_c+1)), exactly the
    # integers np.digitize puts there with the same linspace values.
    space = np.linspace(0.0, cand.astype(np.float64), levels + 1, axis=-1)
    bounds = np.ceil(space).astype(np.int64)
    chunk_count = cnt[bounds[:, 1:]] - cnt[bounds[:, :-1]]
    chunk_nz = nz[bounds[:, 1:]] - nz[bounds[:, :-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = np.where(chunk_nz > 0, chunk_count / np.maximum(chunk_nz, 1), 0.0)
        chunk_term = np.where(chunk_count > 0, chunk_count * np.log(np.where(avg > 0, avg, 1)),
                              0.0).sum(axis=1)
    last = h[cand - 1]  # bin i-1 (always in the last chunk since i >= levels)
    tail = total - cnt[cand]
    p_last = last + tail
    q_total = cnt[cand]
    log_t = np.log(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q_last = np.where(last > 0, np.log(np.where(avg[:, -1] > 0, avg[:, -1], 1.0)),
                              -np.inf)
        # sum over bins j < i-1 with h_j > 0 of P_j log P_j, and of P_j log Q_j
        p_log_p = (hlogh[cand - 1] - cnt[cand - 1] * log_t) / total
        cross = (chunk_term - np.where(last > 0, last * log_q_last, 0.0)
                 - cnt[cand - 1] * np.log(q_total)) / total
        lastp = p_last / total
        last_term = np.where(p_last > 0, lastp * (np.log(np.where(lastp > 0, lastp, 1.0))
                                                  - (log_q_last - np.log(q_total))), 0.0)
    kl = p_log_p - cross + last_term
    kl = np.where(np.isnan(kl), np.inf, kl)
    return cand, kl


ENTROPY_MAX_CLIP = 0.001


def entropy_threshold(s: TensorStats, scheme: Scheme,
                      max_clip: float | None = ENTROPY_MAX_CLIP) -> tuple[float, float]:
    """(threshold, the reference's unrestricted threshold) of KL calibration.

    The reference search can pick a threshold far inside the data when a tensor's histogram
    has tall isolated spikes (a ReLU after a Conv on images with a blank background gives a
    spike at the conv's response to flat patches): on the bundled MNIST CNN it clips 11.7%
    of the first ReLU's values (2.2 dB SQNR) and PTQ accuracy falls to 33%. KL calibration
    is meant to suppress rare outliers, so qdq-onnx searches only the candidates that clip
    at most `max_clip` of the tensor's values (None: the reference unchanged). Where the
    unrestricted minimum meets that, both are the same threshold."""
    if s.upper == 0 or not s.hist.any() or s.bins < scheme.levels:
        return s.amax, s.amax
    original = s.hist.astype(np.float64)
    hist = original.copy()
    hist[0] = hist[1]
    cand, kl = entropy_divergences(hist, scheme.levels, scheme.levels)
    if not np.isfinite(kl).any():
        return s.amax, s.amax

    def pick(values: np.ndarray) -> float:
        best = int(cand[len(values) - 1 - int(np.argmin(values[::-1]))])  # largest on ties
        return float(min(s.edges[best], s.amax))

    reference = pick(kl)
    if max_clip is None:
        return reference, reference
    clipped = 1.0 - np.cumsum(original)[cand - 1] / original.sum()
    allowed = np.where(clipped <= max_clip, kl, np.inf)
    if not np.isfinite(allowed).any():
        return reference, reference
    return pick(allowed), reference


def amax_entropy(s: TensorStats, scheme: Scheme,
                 max_clip: float | None = ENTROPY_MAX_CLIP) -> float:
    """KL calibration (see `entropy_threshold`)."""
    return entropy_threshold(s, scheme, max_clip)[0]


# FP8's grid is logarithmic: its relative error is the same at every magnitude, so the
# clipping/rounding trade-off entropy and mse search on INT8's uniform grid does not apply;
# NVIDIA's FP8 PTQ recipes (Model Optimizer, TensorRT-LLM) calibrate with max.
FLOAT_METHODS = ("max", "percentile")  # == the registered methods with float_grid


@dataclass(frozen=True)
class CalibrationMethod:
    """One calibration method: `threshold(stats, scheme, percentile)` gives one tensor's
    amax (None: the method measures at the reading layer instead, as `auto` does);
    `needs_histogram`: whether statistics must keep a histogram; `float_grid`: whether it
    suits a float scheme's (FP8's) logarithmic grid."""

    name: str
    threshold: Callable[[TensorStats, Scheme, float], float] | None
    needs_histogram: bool
    float_grid: bool


# The registered methods (their names are `quantize.config.METHODS`, tested).
CALIBRATION_METHODS: dict[str, CalibrationMethod] = {m.name: m for m in (
    CalibrationMethod("max", lambda s, scheme, p: s.amax, False, True),
    CalibrationMethod("percentile", lambda s, scheme, p: amax_percentile(s, p), True, True),
    CalibrationMethod("entropy", lambda s, scheme, p: amax_entropy(s, scheme), True, False),
    CalibrationMethod("mse", lambda s, scheme, p: amax_mse(s, scheme), True, False),
    CalibrationMethod("auto", None, True, True),
)}


def method_named(method: str) -> CalibrationMethod:
    """The registered method `method` (QdqError naming the known ones)."""
    found = CALIBRATION_METHODS.get(method)
    if found is None:
        raise QdqError(f"unknown calibration method {method!r}; use one of "
                       f"{', '.join(CALIBRATION_METHODS)}")
    return found


def check_method_for(method: str, scheme: Scheme) -> CalibrationMethod:
    """`method` if it can calibrate pairs of `scheme`, else a one-line QdqError: checked
    for every scheme of a plan before any data is read."""
    found = method_named(method)
    if scheme.is_float and not found.float_grid:
        raise QdqError(f"calibration method {method!r} searches a clipping range on an "
                       f"integer grid; {scheme.name} takes {' or '.join(FLOAT_METHODS)} "
                       f"(amax / {scheme.qmax:g}, as NVIDIA's FP8 recipes calibrate)")
    return found


def amax_from_stats(s: TensorStats, method: str, scheme: Scheme,
                    percentile: float = 99.99) -> float:
    """The threshold of `method` for one tensor's statistics, in `scheme`'s levels. A float
    scheme (FP8) takes max and percentile only (FLOAT_METHODS)."""
    found = check_method_for(method, scheme)
    if found.threshold is None:
        raise QdqError(f"calibration method {method!r} measures each tensor at the layer that "
                       "reads it: use calibrate_plan/collect_amax, not one tensor's statistics")
    return found.threshold(s, scheme, percentile)
