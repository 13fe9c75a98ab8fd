"""The state of one fine-tuning run, owned by the loop and saved whole in every checkpoint:
the position (epoch, batch, step), this epoch's running metrics, the history, and the
keep-best and early-stopping records with their weight snapshots. A run resumed from it
continues exactly as the uninterrupted run would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdq_onnx.finetune.history import EarlyStopping, History, KeepBest


@dataclass
class RunState:
    """Where a run is: `epochs` to train, `epoch` done, `batch_in_epoch` done of the
    current one, `step` optimizer steps done, `totals` of the current epoch (loss x
    samples, samples, correct, counted), the last learning rate, the History, KeepBest and
    EarlyStopping (None when off), and whether a stop was requested."""

    epochs: int
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    offset: int = 0  # samples of this epoch trained at an earlier global batch size
    totals: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    lr: float = 0.0
    history: History = field(default_factory=History)
    keep: KeepBest | None = None
    early: EarlyStopping | None = None
    stop_requested: bool = False

    def request_stop(self) -> None:
        """End the run at the next step boundary (as Ctrl-C does)."""
        self.stop_requested = True

    def add_batch(self, loss: float, samples: int, correct: tuple[int, int] | None) -> None:
        """Count one trained batch into this epoch's running metrics."""
        self.totals[0] += loss * samples
        self.totals[1] += samples
        if correct is not None:
            self.totals[2] += correct[0]
            self.totals[3] += correct[1]

    def running(self) -> dict[str, str]:
        """This epoch's loss (and accuracy) so far, for the progress bar."""
        post = {"loss": f"{self.totals[0] / max(self.totals[1], 1):.4f}"}
        if self.totals[3]:
            post["acc"] = f"{self.totals[2] / self.totals[3]:.4f}"
        return post

    def epoch_logs(self, with_accuracy: bool) -> dict[str, float]:
        """The finished epoch's logs: loss, accuracy (when asked and defined), lr."""
        logs = {"loss": self.totals[0] / max(self.totals[1], 1)}
        if self.totals[3] and with_accuracy:
            logs["accuracy"] = self.totals[2] / self.totals[3]
        logs["lr"] = self.lr
        return logs

    def next_epoch(self) -> None:
        """Count the epoch done; the next starts at its first batch with fresh metrics."""
        self.epoch += 1
        self.batch_in_epoch = self.offset = 0
        self.totals = [0.0, 0.0, 0.0, 0.0]

    def resize(self, old_batch: int, new_batch: int) -> None:
        """Resumed with another global batch (another number of workers): continue at the
        same sample of the epoch's order, in batches of the new size."""
        if old_batch != new_batch:
            self.offset += self.batch_in_epoch * old_batch
            self.batch_in_epoch = 0

    # -- checkpoints ---------------------------------------------------------------------
    def record(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able position and records, weight snapshots) for a checkpoint."""
        arrays: dict[str, np.ndarray] = {}
        record = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                  "step": self.step, "offset": self.offset, "epochs": self.epochs,
                  "totals": list(self.totals),
                  "lr": self.lr, "history": self.history.to_dict(),
                  "stopped": self.history.stopped}
        for name, tracker in (("keep", self.keep), ("early", self.early)):
            if tracker is not None:
                record[name] = tracker.to_dict()
                if tracker.best is not None:
                    arrays[f"{name}_best"] = tracker.best
        return record, arrays

    @classmethod
    def from_record(cls, record: dict[str, Any], arrays: dict[str, np.ndarray],
                    epochs: int) -> RunState:
        """The state a checkpoint saved, to train until `epochs`."""
        history = History.from_dict(record["history"])
        history.stopped = record.get("stopped", "completed")
        if history.stopped == "interrupted":
            history.stopped = "completed"
        state = cls(epochs=epochs, epoch=int(record["epoch"]),
                    batch_in_epoch=int(record["batch_in_epoch"]), step=int(record["step"]),
                    offset=int(record.get("offset", 0)),
                    totals=[float(v) for v in record.get("totals", [0.0] * 4)],
                    lr=float(record.get("lr", 0.0)), history=history)
        if "keep" in record:
            state.keep = KeepBest.from_dict(record["keep"], arrays.get("keep_best"))
        if "early" in record:
            state.early = EarlyStopping.from_dict(record["early"], arrays.get("early_best"))
        return state
