"""The MPI world (mpi4py): non-blocking collectives polled against a deadline, because MPI's
blocking ones wait forever for a rank that hangs (a rank that dies is the launcher's to
notice: it stops the others)."""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from qdq_onnx.parallel.ranks import CollectiveTimeout, World

# MPICH advances a non-blocking collective only inside MPI calls: the first `_SPIN_S` of a
# wait polls without pause (a large gradient moves at full speed); a longer wait (a slower
# rank) naps between polls so it costs a fraction of a core.
_SPIN_S = 0.05
_NAP_S = 2e-4


class MpiWorld(World):
    """Every rank of MPI_COMM_WORLD."""

    def __init__(self, timeout: float) -> None:
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout

    def _wait(self, request: MPI.Request, what: str, timeout: float | None = None) -> None:
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + limit
        try:
            self._poll(request, what, limit, deadline)
        finally:
            self.waited_s += time.monotonic() - start

    def _poll(self, request: MPI.Request, what: str, limit: float, deadline: float) -> None:
        spin_until = time.monotonic() + _SPIN_S
        while not request.Test():
            now = time.monotonic()
            if now > spin_until:
                time.sleep(_NAP_S)
            if now > deadline:
                raise CollectiveTimeout(
                    f"rank {self.rank}: {what} waited {limit:g} s for the other "
                    f"{self.size - 1} rank(s): one stopped answering; every rank is "
                    "stopped (QDQ_ONNX_COLLECTIVE_TIMEOUT sets the limit)")

    def _allreduce(self, array: np.ndarray, op: MPI.Op, what: str) -> np.ndarray:
        send = np.ascontiguousarray(array)
        out = np.empty_like(send)
        self._wait(self.comm.Iallreduce(send, out, op=op), what)
        return out

    def allreduce_sum(self, array: np.ndarray, what: str) -> np.ndarray:
        return self._allreduce(array, MPI.SUM, what)

    def allreduce_max(self, array: np.ndarray, what: str) -> np.ndarray:
        return self._allreduce(array, MPI.MAX, what)

    def allreduce_sum_inplace(self, array: np.ndarray, what: str) -> None:
        if not array.flags.c_contiguous:
            raise ValueError("an in-place allreduce needs a contiguous array")
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM), what)

    def barrier(self, what: str, timeout: float | None = None) -> None:
        self._wait(self.comm.Ibarrier(), what, timeout)

    def abort(self, code: int) -> None:
        self.comm.Abort(code)
