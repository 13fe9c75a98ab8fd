"""Hooks of the fine-tuning loop. A callback overrides what it needs; each method receives
the run's state (`RunState`), and `state.request_stop()` ends the run at the next step
boundary exactly as Ctrl-C does (a checkpoint is written, `history.stopped` says
"interrupted")."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from qdq_onnx.finetune.state import RunState


class Callback:
    """Base class: every hook does nothing."""

    def on_step_end(self, state: RunState, loss: float) -> None:
        """After each optimizer step (`state.step` counts it)."""

    def on_epoch_end(self, state: RunState, logs: dict[str, float], seconds: float) -> None:
        """After each epoch (`state.epoch` is the number of epochs done)."""

    def on_checkpoint(self, state: RunState, folder: Path) -> None:
        """After a checkpoint was written (atomically) to `folder`."""


class EpochPrinter(Callback):
    """Keras-style epoch lines on `stream` (default stdout)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def on_epoch_end(self, state: RunState, logs: dict[str, float], seconds: float) -> None:
        text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        out = self.stream if self.stream is not None else sys.stdout
        out.write(f"epoch {state.epoch}/{state.epochs} - {seconds:.1f}s - {text}\n")
        out.flush()


class StopAfterSteps(Callback):
    """End the run after `steps` optimizer steps of this run, as an interruption would (a
    step budget; tests use it to stop mid-epoch)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, state: RunState, loss: float) -> None:
        if state.step >= self.steps:
            state.request_stop()
