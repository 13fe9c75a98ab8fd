"""Calibration: run the float model on data and derive each quantized activation's range.

One onnxruntime session exposes every tensor the plan quantizes; batches stream through it
and each tensor keeps a running max |x| and a fixed-size histogram of |x| (2048 bins that
merge pairwise when the range grows), so memory does not grow with the number of samples.
Methods: max (TensorRT deployments' usual choice), percentile, entropy (KL divergence, as in
TensorRT's entropy calibrator) and MSE, the last three from the histogram.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.progress import progress

METHODS = ("max", "percentile", "entropy", "mse")
DEFAULT_BINS = 2048
QLEVELS = 128  # |x| maps to 0..127 in symmetric int8


@dataclass
class TensorStats:
    """Running max |x| and histogram of |x| over [0, upper) in `bins` equal bins."""

    bins: int = DEFAULT_BINS
    amax: float = 0.0
    upper: float = 0.0
    count: int = 0
    hist: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.hist is None:
            self.hist = np.zeros(self.bins, dtype=np.int64)

    def update(self, x: np.ndarray, with_hist: bool = True) -> None:
        x = np.asarray(x)
        if x.size == 0:
            return
        # max(|x|) without materialising |x|: max calibration needs nothing else.
        m = float(max(x.max(), -x.min()))
        if not np.isfinite(m):
            raise QdqError("NaN/Inf in an activation")
        self.amax = max(self.amax, m)
        self.count += x.size
        if not with_hist:
            return
        a = np.abs(x.astype(np.float32, copy=False).ravel())
        if m > self.upper:
            self._grow(m)
        if self.upper > 0:
            h, _ = np.histogram(a, bins=self.bins, range=(0.0, self.upper))
            self.hist += h
        else:
            self.hist[0] += a.size

    def _grow(self, m: float) -> None:
        if self.upper == 0.0:
            zeros = int(self.hist.sum())
            self.upper = m
            self.hist[:] = 0
            self.hist[0] = zeros
            return
        factor = 1
        while self.upper * factor < m:
            factor *= 2
        self.upper *= factor
        if factor >= self.bins:
            total = int(self.hist.sum())
            self.hist[:] = 0
            self.hist[0] = total
            return
        merged = self.hist.reshape(self.bins // factor, factor).sum(axis=1)
        self.hist[:] = 0
        self.hist[: merged.size] = merged

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.upper, self.bins + 1)

    def nbytes(self) -> int:
        return int(self.hist.nbytes)


def amax_percentile(s: TensorStats, percentile: float) -> float:
    total = s.hist.sum()
    if total == 0 or s.upper == 0:
        return s.amax
    cdf = np.cumsum(s.hist) / total
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(min(s.edges[min(idx + 1, s.bins)], s.amax))


def _candidates(s: TensorStats, n: int = 256) -> np.ndarray:
    """Bin indices (exclusive upper ends) to try as clipping thresholds."""
    last = int(np.nonzero(s.hist)[0][-1]) + 1 if s.hist.any() else s.bins
    first = min(QLEVELS, last)
    return np.unique(np.linspace(first, last, num=min(n, last - first + 1)).astype(int))


def amax_mse(s: TensorStats) -> float:
    """Threshold minimising the expected squared quantization error over the histogram."""
    if s.upper == 0 or not s.hist.any():
        return s.amax
    width = s.upper / s.bins
    centers = (np.arange(s.bins) + 0.5) * width
    counts = s.hist.astype(np.float64)
    best, best_err = s.amax, np.inf
    for i in _candidates(s):
        c = i * width
        step = c / (QLEVELS - 1)
        inside = centers <= c
        err = (counts[inside].sum() * step * step / 12.0
               + np.sum(counts[~inside] * (centers[~inside] - c) ** 2))
        if err < best_err:
            best, best_err = c, err
    return float(min(best, s.amax))


def amax_entropy(s: TensorStats) -> float:
    """TensorRT-style KL calibration: the threshold whose 128-level quantized distribution
    diverges least from the clipped reference distribution."""
    if s.upper == 0 or not s.hist.any():
        return s.amax
    hist = s.hist.astype(np.float64)
    # Exact zeros (ReLU outputs, image background) are represented exactly at any scale; left
    # in, their spike dominates the divergence and drives the threshold towards zero. Like
    # NVIDIA's entropy calibrators, give bin 0 the count of its neighbour instead.
    if hist.size > 1:
        hist[0] = hist[1]
    width = s.upper / s.bins
    best, best_kl = s.amax, np.inf
    for i in _candidates(s):
        ref = hist[:i].copy()
        ref[i - 1] += hist[i:].sum()
        nonzero = hist[:i] > 0
        chunks = np.array_split(np.arange(i), QLEVELS)
        q = np.zeros(i)
        for chunk in chunks:
            nz = nonzero[chunk]
            if nz.any():
                q[chunk[nz]] = hist[:i][chunk].sum() / nz.sum()
        p_sum, q_sum = ref.sum(), q.sum()
        if q_sum == 0:
            continue
        p, qn = ref / p_sum, q / q_sum
        mask = p > 0
        if np.any(qn[mask] == 0):
            kl = np.inf
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / qn[mask])))
        if kl < best_kl:
            best, best_kl = (i + 0.5) * width, kl
    return float(min(best, s.amax))


def amax_from_stats(s: TensorStats, method: str = "max", percentile: float = 99.99) -> float:
    if method == "max":
        return s.amax
    if method == "percentile":
        return amax_percentile(s, percentile)
    if method == "entropy":
        return amax_entropy(s)
    if method == "mse":
        return amax_mse(s)
    raise QdqError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")


def check_method(method: str, percentile: float) -> None:
    if method not in METHODS:
        raise QdqError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise QdqError(f"--percentile must be in (0, 100], got {percentile}")


def _session(model: onnx.ModelProto, outputs: list[str], reduce_max: bool = False):
    """A session that also returns `outputs`; with `reduce_max`, it returns max |x| of each
    instead (computed inside onnxruntime, so no activation is copied out)."""
    from qdq_onnx.graph.sessions import inference_session, with_outputs

    if not reduce_max:
        return inference_session(with_outputs(model, outputs)), list(outputs)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = []
    for i, name in enumerate(outputs):
        absolute, peak = f"qdq_onnx_calib_abs_{i}", f"qdq_onnx_calib_max_{i}"
        probe.graph.node.extend([
            onnx.helper.make_node("Abs", [name], [absolute], name=absolute),
            onnx.helper.make_node("ReduceMax", [absolute], [peak], name=peak, keepdims=0)])
        probe.graph.output.append(onnx.ValueInfoProto(name=peak))
        names.append(peak)
    return inference_session(probe), names


def collect_stats(model: onnx.ModelProto, tensors: Iterable[str], data: Any,
                  batch_size: int = 32, max_samples: int | None = None,
                  with_hist: bool = True, bins: int = DEFAULT_BINS,
                  show_progress: bool = True) -> dict[str, TensorStats]:
    """Stream `data` through the float model once, keeping TensorStats per tensor."""
    from qdq_onnx.data.feeds import as_batches

    if batch_size <= 0:
        raise QdqError(f"batch size must be a positive integer, got {batch_size}")
    tensors = sorted(set(tensors))
    inputs = {i.name for i in model.graph.input}
    fetch = [t for t in tensors if t not in inputs]
    batch_iter, total = as_batches(data, model, batch_size=batch_size, limit=max_samples,
                                   source="calibration data")
    # Max calibration only needs max |x|: let onnxruntime reduce each tensor to a scalar.
    session, names = _session(model, fetch, reduce_max=not with_hist)
    stats = {t: TensorStats(bins=bins) for t in tensors}
    seen = 0
    with progress(total=total, desc="calibrate", unit="sample", enable=show_progress) as bar:
        for feed in batch_iter:
            values = session.run(names, feed) if fetch else []
            current = dict(zip(fetch, values))
            for t in tensors:
                try:
                    stats[t].update(current[t] if t in current else feed[t], with_hist)
                except QdqError:
                    raise QdqError(f"calibration: tensor {t!r} produced NaN/Inf on the data "
                                   f"(batch starting at sample {seen})") from None
            n = next(iter(feed.values())).shape[0]
            seen += n
            bar.update(n)
    if seen == 0:
        raise QdqError("calibration data is empty")
    return stats


def group_amax(stats: dict[str, TensorStats], groups: dict[str, list[str]], method: str,
               percentile: float = 99.99) -> dict[str, float]:
    """One amax per scale key: the max over the member tensors' amax."""
    per_tensor = {t: amax_from_stats(s, method, percentile) for t, s in stats.items()}
    return {key: max(per_tensor[t] for t in members) for key, members in groups.items()}


def collect_amax(model: onnx.ModelProto, plan, data: Any, batch_size: int = 32,
                 max_samples: int | None = None, method: str = "max",
                 percentile: float = 99.99, show_progress: bool = True) -> dict[str, float]:
    """Calibrated amax per scale key (scale group, else tensor) of a placement plan."""
    check_method(method, percentile)
    groups = {key: [p.tensor for p in members]
              for key, members in plan.activation_groups().items()}
    if not groups:
        return {}
    tensors = {t for members in groups.values() for t in members}
    stats = collect_stats(model, tensors, data, batch_size=batch_size,
                          max_samples=max_samples, with_hist=method != "max",
                          show_progress=show_progress)
    return group_amax(stats, groups, method, percentile)
