"""`--workers N` on one machine: run the same command in N ranks under the MPICH launcher
(`mpiexec -n N`, from the `mpich` wheel of the distributed extra), pass their output
through, and, when a rank fails, say once which one and why.

Every rank records its pid (and, on an error, its message) in a run folder named by
QDQ_ONNX_RUN_DIR. When a rank dies, mpiexec stops the others and prints the dead process's
pid; the pid files turn that into a rank. The same command under any MPI launcher
(`mpiexec -hosts ...`, `srun`) runs the same code, with that launcher's own reporting."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from qdq_onnx.errors import ExitCode
from qdq_onnx.files.atomic import write_text_atomic
from qdq_onnx.parallel.config import ParallelConfig
from qdq_onnx.parallel.ranks import CollectiveTimeout, World
from qdq_onnx.parallel.world import TIMEOUT_VARIABLE, missing_mpi

RUN_DIR_VARIABLE = "QDQ_ONNX_RUN_DIR"
# What each rank runs, before the command's arguments (tests/pause.py puts itself here).
WORKER_COMMAND: list[str] = [sys.executable, "-m", "qdq_onnx"]
# mpiexec's report of a dead rank (MPICH hydra), hidden and read instead of passed on.
_BANNER = re.compile(r"^(=+$|=  |YOUR APPLICATION TERMINATED|This typically refers|"
                     r"Please see the FAQ|application called MPI_Abort|Abort\(\d+\))")
_PID = re.compile(r"PID (\d+) RUNNING AT (\S+)")
_EXIT_STRING = re.compile(r"EXIT STRING: (.+)$", re.M)
_EXIT_CODE = re.compile(r"EXIT CODE: (\d+)")
# A rank's own one-line error: recorded in its error file, printed once by the launcher.
_ERROR_LINE = re.compile(r"^qdq-onnx \S+: (error: )?")


@dataclass
class Launched:
    """How a launched run ended: its exit code and, on failure, the one line saying why."""

    code: int
    failure: str | None = None


def mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's), else on PATH."""
    if importlib.util.find_spec("mpi4py") is None:
        raise missing_mpi()
    here = os.path.dirname(sys.executable)
    found = shutil.which("mpiexec", path=here) or shutil.which("mpiexec")
    if found is None:
        raise missing_mpi()
    return found


def _forward(stream: IO[str], out: IO[str], banner: list[str]) -> None:
    for line in stream:
        hidden = _BANNER.match(line) or (_ERROR_LINE.match(line) and "error" in line)
        if hidden or not line.strip():
            banner.append(line.rstrip("\n"))
            continue
        out.write(line)
        out.flush()


def launch(argv: list[str], config: ParallelConfig) -> Launched:
    """Run `qdq-onnx ARGV` in `config.workers` local ranks; wait for all of them."""
    command = [mpiexec(), "-n", str(config.workers), *WORKER_COMMAND, *argv]
    run_dir = tempfile.mkdtemp(prefix="qdq-onnx-ranks-")
    env = {**os.environ, RUN_DIR_VARIABLE: run_dir}
    if config.collective_timeout is not None:
        env[TIMEOUT_VARIABLE] = str(config.timeout_s)
    banner: list[str] = []
    try:
        # Its own session: a Ctrl-C reaches the ranks once, through `_wait` and mpiexec
        # (which forwards it); a second one makes mpiexec abort them, as it does alone.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        readers = [threading.Thread(target=_forward, args=(s, o, banner), daemon=True)
                   for s, o in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
        for r in readers:
            r.start()
        code = _wait(proc)
        for r in readers:
            r.join()
        if code in (ExitCode.OK, ExitCode.INTERRUPTED):  # the ranks said what happened
            return Launched(code)
        return _failure(Path(run_dir), banner, code)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait(proc: subprocess.Popen) -> int:
    """The launcher's exit code. Ctrl-C or SIGTERM is passed to mpiexec as SIGINT (it
    forwards it to every rank, which checkpoint and stop at the same step), then the ranks
    are waited for."""
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)


def _failure(run_dir: Path, banner: list[str], code: int) -> Launched:
    """The lowest rank's own error (with its exit code), else the rank mpiexec saw die,
    else the launcher's status (exit code WORKER_FAILED)."""
    errors = sorted(run_dir.glob("rank-*.error"), key=lambda p: int(p.stem.split("-")[1]))
    if errors:
        status, line = errors[0].read_text().split("\n", 1)
        rank = errors[0].stem.split("-")[1]
        text = _ERROR_LINE.sub("", line.strip())
        return Launched(int(status), text if text.startswith(f"rank {rank}:")
                        else f"rank {rank}: {text}")
    pids = {p.read_text().strip(): p.stem.split("-")[1] for p in run_dir.glob("rank-*.pid")}
    joined = "\n".join(banner)
    dead, how, status = (_PID.search(joined), _EXIT_STRING.search(joined),
                         _EXIT_CODE.search(joined))
    if dead:
        rank = pids.get(dead[1], "?")
        why = how[1].strip() if how else f"exit status {status[1] if status else code}"
        return Launched(ExitCode.WORKER_FAILED,
                        f"rank {rank} (pid {dead[1]} on {dead[2]}) died ({why.lower()}); "
                        "mpiexec stopped the other ranks")
    said = next((line for line in banner if _ERROR_LINE.match(line)), None)
    if said:  # a rank printed its error but could not record it
        return Launched(code, _ERROR_LINE.sub("", said))
    return Launched(ExitCode.WORKER_FAILED,
                    f"a rank failed (mpiexec exit status {code}) before it could say why")


def record_rank(world: World) -> None:
    """In a rank started by `launch`: record this process's pid for the launcher."""
    folder = os.environ.get(RUN_DIR_VARIABLE)
    if folder and world.size > 1:
        (Path(folder) / f"rank-{world.rank}.pid").write_text(f"{os.getpid()}\n")


def record_error(world: World, code: int, line: str) -> None:
    """In a rank started by `launch`: leave the failure's exit code and message."""
    folder = os.environ.get(RUN_DIR_VARIABLE)
    if folder and world.size > 1:
        write_text_atomic(Path(folder) / f"rank-{world.rank}.error", f"{code}\n{line}\n")



# A failed rank waits this long for the others to fail too (the same bad input on every
# rank) before it aborts them (they are stuck waiting for it).
_FAILED_WAIT_S = 30.0


def finish_rank(world: World, code: int, line: str | None) -> int:
    """End a rank of a several-rank run: a failure is recorded for the launcher; every rank
    then meets the others once more, and a rank that cannot (another is stuck in a
    collective waiting for a rank that failed) stops all of them."""
    if world.size == 1:
        return code
    done = code in (ExitCode.OK, ExitCode.INTERRUPTED)
    if not done:
        record_error(world, code, line or f"exit status {code}")
    try:
        world.barrier("the end of the run",
                      timeout=world.timeout if done else min(_FAILED_WAIT_S, world.timeout))
    except CollectiveTimeout:
        world.abort(code or ExitCode.WORKER_FAILED)
    return code
