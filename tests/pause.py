"""Run `qdq-onnx ARGS...` in this (child) process and stop at a chosen point until told.

    python tests/pause.py POINT -- qdq-onnx arguments...

POINT is `calibration-batch` (after the first calibration batch) or `step:N` (after
optimizer step N of fine-tuning). For `--workers` runs, `kill-rank:R:step:N` makes rank R
SIGKILL itself after step N, `hang-rank:R:step:N` makes it stop answering there (it
waits on an event nobody sets) and `interrupt-rank:R:step:N` sends it SIGINT (a Ctrl-C
that reached one rank only); the launcher starts every rank through this file. At a
pause point the child prints `paused` on stdout, flushes, and blocks reading stdin: the
test then signals it (SIGINT, SIGTERM, SIGKILL) or closes stdin to let it go on. Tests
sequence processes on this pipe, never on the clock.

The hooks wrap qdq-onnx functions inside this child only; the command itself runs as the
installed CLI does (`main`)."""

from __future__ import annotations

import sys


def _pause() -> None:
    sys.stdout.write("paused\n")
    sys.stdout.flush()
    sys.stdin.readline()


def _pause_in_calibration() -> None:
    import qdq_onnx.data.feeds as feeds

    original = feeds.as_batches

    def as_batches(*args, **kwargs):
        batches, total = original(*args, **kwargs)

        def paused():
            for i, batch in enumerate(batches):
                if i == 1 and kwargs.get("source") == "calibration data":
                    _pause()
                yield batch
        return paused(), total

    feeds.as_batches = as_batches


def _pause_at_step(step: int) -> None:
    from qdq_onnx.finetune import Callback
    from qdq_onnx.finetune.loop import FitLoop

    class Pause(Callback):
        def on_step_end(self, state, loss):
            if state.step == step:
                _pause()

    original = FitLoop.__init__

    def init(self, trainer, feeds, labels, val, fit, callbacks):
        original(self, trainer, feeds, labels, val, fit, [*callbacks, Pause()])

    FitLoop.__init__ = init


def _rank_fault(point: str, argv: list[str]) -> None:
    """Every rank runs this file too; rank R fails after step N as `point` says."""
    import os
    import signal
    import threading

    from qdq_onnx.parallel import launch, world
    from qdq_onnx.parallel.world import launched_by_mpi

    kind, rank, _, step = point.split(":")
    if not launched_by_mpi():  # the launcher: start the ranks through this file
        launch.WORKER_COMMAND = [sys.executable, __file__, point, "--"]
        return
    from qdq_onnx.finetune import Callback
    from qdq_onnx.finetune.loop import FitLoop

    class Fault(Callback):
        def on_step_end(self, state, loss):
            if state.step == int(step) and world().rank == int(rank):
                if kind == "kill-rank":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif kind == "interrupt-rank":
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                threading.Event().wait()

    original = FitLoop.__init__

    def init(self, trainer, feeds, labels, val, fit, callbacks):
        original(self, trainer, feeds, labels, val, fit, [*callbacks, Fault()])

    FitLoop.__init__ = init


def main() -> int:
    import signal

    # A test started from a background job inherits SIGINT ignored (POSIX), and Python then
    # keeps it ignored: give the child the handler an interactive `qdq-onnx` has.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    point, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: pause.py POINT -- ARGS..."
    if point == "calibration-batch":
        _pause_in_calibration()
    elif point.startswith("step:"):
        _pause_at_step(int(point.split(":", 1)[1]))
    elif point.startswith(("kill-rank:", "hang-rank:", "interrupt-rank:")):
        _rank_fault(point, argv)
    else:
        raise SystemExit(f"unknown pause point {point!r}")
    from qdq_onnx.cli.main import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
