"""Per-tensor calibration statistics: the exact max |x| and a histogram of |x|.

Two ways to fill the histogram:
- `fixed` range (the default when the data can be read twice): the range is the exact
  max |x| found by a first pass, so every batch lands in the same 2048 bins and the counts
  are plain sums: independent of the batch size and of the order of the samples.
- growing range (one-shot iterators): the range doubles when a larger value arrives and
  bins merge pairwise; memory stays fixed, but the final bins depend on the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qdq_onnx.errors import QdqError
from qdq_onnx.types.scheme import Scheme

DEFAULT_BINS = 2048


@dataclass
class TensorStats:
    """Running max |x| and histogram of |x| over [0, upper) in `bins` equal bins.

    With `upper` given up front (fixed range), values are histogrammed over [0, upper]
    and nothing ever merges; otherwise the range grows by powers of two."""

    bins: int = DEFAULT_BINS
    amax: float = 0.0
    upper: float = 0.0
    count: int = 0
    fixed: bool = False
    hist: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.hist is None:
            self.hist = np.zeros(self.bins, dtype=np.int64)

    @classmethod
    def with_range(cls, upper: float, bins: int = DEFAULT_BINS) -> TensorStats:
        """Statistics over a known range [0, upper] (the exact max of a first pass)."""
        return cls(bins=bins, upper=float(upper), fixed=True)

    def update(self, x: np.ndarray, with_hist: bool = True) -> None:
        """Add a batch of values (NaN/Inf raise QdqError)."""
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
        if self.fixed:
            if m > self.upper * (1 + 1e-6) + 1e-30:
                raise QdqError(f"a value {m:g} exceeds the range {self.upper:g} of the first "
                               "pass: the calibration data changed between passes")
            self._add(a)
            return
        if m > self.upper:
            self._grow(m)
        self._add(a)

    def _add(self, a: np.ndarray) -> None:
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
    def width(self) -> float:
        return self.upper / self.bins

    @property
    def edges(self) -> np.ndarray:
        """The bins + 1 bin edges."""
        return np.linspace(0.0, self.upper, self.bins + 1)

    def nbytes(self) -> int:
        """Memory held by the histogram (fixed whatever the number of samples)."""
        return int(self.hist.nbytes)

    def clipped_fraction(self, amax: float) -> float:
        """Fraction of the values above `amax` (exact when `amax` is a bin edge)."""
        if self.count == 0 or amax >= self.amax:
            return 0.0
        if self.upper == 0:
            return 0.0
        first = int(np.ceil(amax / self.width - 1e-9))
        return float(self.hist[min(first, self.bins):].sum() / self.hist.sum())

    def estimated_sqnr_db(self, amax: float, scheme: Scheme) -> float:
        """SQNR of Q->DQ with this amax in `scheme`, estimated from the histogram (bin
        centres: rounding noise step^2/12 inside the range, the clipping distance outside)."""
        if self.upper == 0 or not self.hist.any():
            return float("inf")
        centers = (np.arange(self.bins) + 0.5) * self.width
        counts = self.hist.astype(np.float64)
        signal = float(np.sum(counts * centers ** 2))
        step = max(amax, 1e-30) / scheme.qmax
        inside = centers <= amax
        noise = float(counts[inside].sum() * step * step / 12.0
                      + np.sum(counts[~inside] * (centers[~inside] - amax) ** 2))
        if noise <= 0:
            return float("inf")
        return float(10.0 * np.log10(max(signal, 1e-300) / noise))
