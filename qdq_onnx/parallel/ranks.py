"""What every world of ranks is (`World`: rank, size, the collectives) and how a collective
fails (`CollectiveTimeout`), apart from choosing one (`world.py`) and from MPI (`mpi.py`),
so neither of those imports the other to know them."""

from __future__ import annotations

import numpy as np

from qdq_onnx.errors import ExitCode, QdqError

DEFAULT_TIMEOUT_S = 600.0


class CollectiveTimeout(QdqError):
    """A collective did not complete in time: some rank stopped answering."""

    exit_code = ExitCode.WORKER_FAILED


class World:
    """The ranks of one run. `rank` 0 is the root: the only one that writes files."""

    rank: int = 0
    size: int = 1
    timeout: float = DEFAULT_TIMEOUT_S
    waited_s: float = 0.0  # time inside collectives so far (transfer + waiting for others)

    @property
    def is_root(self) -> bool:
        """Whether this process writes checkpoints, outputs and reports."""
        return self.rank == 0

    def allreduce_sum(self, array: np.ndarray, what: str) -> np.ndarray:
        """The elementwise sum of `array` over every rank (`what` names it in errors)."""
        return array

    def allreduce_max(self, array: np.ndarray, what: str) -> np.ndarray:
        """The elementwise maximum of `array` over every rank."""
        return array

    def allreduce_sum_inplace(self, array: np.ndarray, what: str) -> None:
        """Replace the contiguous `array` by its sum over every rank (no second buffer)."""

    def barrier(self, what: str, timeout: float | None = None) -> None:
        """Wait until every rank got here (at most `timeout`, default `self.timeout`)."""

    def abort(self, code: int) -> None:
        """Stop every rank now with exit status `code` (a failure on one rank)."""
        raise SystemExit(code)
