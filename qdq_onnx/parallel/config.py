"""`ParallelConfig`: how many local ranks a command runs in and how long a rank waits for
the others, validated once, where it is made (the CLI's --workers and --collective-timeout,
and the timeout the launcher hands to its ranks)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdq_onnx.errors import SettingError
from qdq_onnx.parallel.ranks import DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class ParallelConfig:
    """`workers`: local ranks (`mpiexec -n N`; 1: this process; under an MPI launcher the
    launcher's ranks are used instead). `collective_timeout`: seconds a rank waits for the
    others in a collective before the run stops (None: DEFAULT_TIMEOUT_S)."""

    workers: int = 1
    collective_timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 1:
            raise SettingError("workers", f"must be at least 1, got {self.workers}")
        t = self.collective_timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                              or not math.isfinite(t) or t <= 0):
            raise SettingError("collective_timeout",
                               f"must be a positive number of seconds, got {t}")

    @property
    def timeout_s(self) -> float:
        """The collective timeout in seconds, the default filled in."""
        return DEFAULT_TIMEOUT_S if self.collective_timeout is None \
            else float(self.collective_timeout)
