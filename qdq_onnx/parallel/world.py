"""The world a process trains or calibrates in: `Single` (one process, every collective the
identity) or, when an MPI launcher (`mpiexec`, `mpirun`, `srun`) started it with several
ranks, an `MpiWorld`. Collectives wait at most `timeout` seconds, so a rank that stops
answering ends the run with a message instead of a hang."""

from __future__ import annotations

import os
import shutil
import sys

from qdq_onnx.errors import QdqError, RuntimeMissing
from qdq_onnx.parallel.ranks import DEFAULT_TIMEOUT_S, CollectiveTimeout, World

__all__ = ["DEFAULT_TIMEOUT_S", "CollectiveTimeout", "LauncherMismatch", "Single", "World",
           "launched_by_mpi", "threads_per_rank", "world"]

# Set by MPI launchers in every rank they start: MPICH/Intel MPI/Slurm PMI, Open MPI, PMIx.
LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
# Of those and their kin, the ones that say this process is one of several ranks: a size
# above 1, or a rank above 0.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("PMIX_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")
TIMEOUT_VARIABLE = "QDQ_ONNX_COLLECTIVE_TIMEOUT"


class LauncherMismatch(QdqError):
    """The launcher started several ranks but MPI for Python sees this process alone: the
    launcher is not of the MPI mpi4py was built against."""


class Single(World):
    """One process: collectives return their input."""


_WORLD: World | None = None


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process."""
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def _timeout() -> float:
    """The collective timeout the launcher (or the user) put in the environment, validated
    as ParallelConfig validates --collective-timeout."""
    from qdq_onnx.errors import SettingError
    from qdq_onnx.parallel.config import ParallelConfig

    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        return ParallelConfig(collective_timeout=float(text)).timeout_s
    except (ValueError, SettingError) as err:
        raise QdqError(f"{TIMEOUT_VARIABLE}={text!r}: expected a number of seconds > 0"
                       ) from err


# Ranks the launcher started on this machine: MPICH/Intel MPI, Open MPI, Slurm.
_LOCAL_RANKS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


THREADS_VARIABLE = "QDQ_ONNX_THREADS"


def threads_per_rank() -> int:
    """Compute threads for one process: QDQ_ONNX_THREADS when set, else this machine's
    cores shared by the ranks on it (0, the runtime's default, outside a launcher), so N
    local ranks do not oversubscribe."""
    text = os.environ.get(THREADS_VARIABLE, "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    if not launched_by_mpi():
        return 0
    local = next((os.environ[v] for v in _LOCAL_RANKS if os.environ.get(v, "").isdigit()),
                 "1")
    return max(1, (os.cpu_count() or 1) // max(1, int(local)))


def missing_mpi() -> RuntimeMissing:
    """The one-line error for a distributed run without the extra."""
    return RuntimeMissing("several workers need MPI for Python: install the extra "
                          "qdq-onnx[distributed] (mpi4py and the MPICH wheel)")


def _launcher_ranks() -> tuple[str, str] | None:
    """(variable, value) of the launcher's variable saying this process is one of several
    ranks, or None."""
    for names, least in ((_SIZE_VARIABLES, 2), (_RANK_VARIABLES, 1)):
        for name in names:
            text = os.environ.get(name, "").strip()
            if text.isdigit() and int(text) >= least:
                return name, text
    return None


def launcher_mismatch(variable: str, value: str, size: int) -> LauncherMismatch:
    """The one-line error for a launcher whose ranks mpi4py's MPI does not see."""
    here = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    which = f"({here}, the mpich wheel's)" if here else "(the mpich wheel's)"
    return LauncherMismatch(
        f"the MPI launcher set {variable}={value} but mpi4py's MPI_COMM_WORLD has {size} "
        "rank: the launcher is not of the MPI mpi4py was built against (a site MPI, a "
        "Slurm PMI mismatch), so each rank would run the whole job alone and write the same "
        f"output; launch with the mpiexec of mpi4py's MPI {which}, or on one machine "
        "run qdq-onnx ... --workers N")


def world() -> World:
    """This process's world, made once: an MpiWorld of every rank when an MPI launcher
    started several, else Single. LauncherMismatch when the launcher says several ranks
    but MPI sees one (raised once: the process then counts as alone, to end cleanly)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = Single()
        if launched_by_mpi():
            try:
                from qdq_onnx.parallel.mpi import MpiWorld
            except ImportError as err:
                raise missing_mpi() from err
            mpi = MpiWorld(_timeout())
            if mpi.size > 1:
                _WORLD = mpi
            elif (said := _launcher_ranks()) is not None:
                raise launcher_mismatch(*said, mpi.size)
    return _WORLD
