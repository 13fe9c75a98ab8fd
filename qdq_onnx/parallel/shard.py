"""Which rows a rank reads: the sampler semantics of PyTorch's `DistributedSampler` (rank r
of N takes every N-th index of the shuffled order, starting at r), applied to each global
batch, so the ranks' batches of one step together are exactly the one-process batch of
N x B samples."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def shard_rows(rows: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank `rank`'s share of one global batch `rows` (disjoint across ranks, together all
    of them; sizes differ by at most one, and a rank may get none of a short last batch)."""
    return rows[rank::size]


def shard_batches(batches: Iterable[T], rank: int, size: int) -> Iterator[T]:
    """Every `size`-th item of `batches`, starting at `rank` (calibration: whole batches per
    rank, so each batch is reduced exactly as one process would see it)."""
    for i, batch in enumerate(batches):
        if i % size == rank:
            yield batch
