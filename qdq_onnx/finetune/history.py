"""Training history (Keras-like) and early stopping on the monitored loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class History:
    """Keras-like: `history.history["loss"]` per epoch, plus why training stopped."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)  # every optimizer step's loss
    steps: int = 0
    stopped: str = "completed"  # completed | early_stopping | interrupted
    kept: str | None = None  # why the returned weights are not the last epoch's

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record the logs (loss, accuracy, val_*, lr) of epoch `epoch`."""
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def to_dict(self) -> dict:
        """The history as plain data (stored in checkpoints)."""
        return {"history": self.history, "epoch": self.epoch, "batch_loss": self.batch_loss}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        """A History from `to_dict()` data (when resuming)."""
        return cls(history=data["history"], epoch=data["epoch"],
                   batch_loss=data.get("batch_loss", []))


class EarlyStopping:
    """Stop after `patience` epochs without a lower monitored value (val_loss, else loss);
    `best` keeps a snapshot of the parameters at the best epoch to restore."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_value = math.inf
        self.best: np.ndarray | None = None
        self.waited = 0

    def update(self, logs: dict[str, float], snapshot) -> bool:
        """Record an epoch's logs; `snapshot()` is called only on improvement. True when
        training should stop."""
        value = logs.get("val_loss", logs["loss"])
        if value < self.best_value:
            self.best_value, self.best, self.waited = value, snapshot(), 0
            return False
        self.waited += 1
        return self.waited >= self.patience

    def to_dict(self) -> dict:
        """The record without the snapshot (saved beside it in checkpoints)."""
        return {"patience": self.patience, "best_value": self.best_value,
                "waited": self.waited}

    @classmethod
    def from_dict(cls, data: dict, best: np.ndarray | None) -> EarlyStopping:
        """The record of `to_dict()` with its snapshot."""
        out = cls(int(data["patience"]))
        out.best_value, out.waited, out.best = float(data["best_value"]), int(data["waited"]), best
        return out


class KeepBest:
    """The best weights by validation (accuracy when there is one, else loss), the starting
    weights included, so fine-tuning never returns a model worse than it began on the
    validation data."""

    def __init__(self, start_logs: dict[str, float], snapshot) -> None:
        self.key = "val_accuracy" if "val_accuracy" in start_logs else "val_loss"
        self.sign = 1.0 if self.key == "val_accuracy" else -1.0
        self.start = start_logs[self.key]
        self.best_value, self.best, self.best_epoch = self.start, snapshot(), -1

    def update(self, epoch: int, logs: dict[str, float], snapshot) -> None:
        """Record an epoch; `snapshot()` is called only when it beats the best so far."""
        value = logs.get(self.key)
        if value is not None and self.sign * (value - self.best_value) > 0:
            self.best_value, self.best, self.best_epoch = value, snapshot(), epoch

    def to_dict(self) -> dict:
        """The record without the snapshot (saved beside it in checkpoints)."""
        return {"key": self.key, "start": self.start, "best_value": self.best_value,
                "best_epoch": self.best_epoch}

    @classmethod
    def from_dict(cls, data: dict, best: np.ndarray | None) -> KeepBest:
        """The record of `to_dict()` with its snapshot."""
        out = cls.__new__(cls)
        out.key = data["key"]
        out.sign = 1.0 if out.key == "val_accuracy" else -1.0
        out.start, out.best_value = float(data["start"]), float(data["best_value"])
        out.best_epoch, out.best = int(data["best_epoch"]), best
        return out

    def summary(self, last_epoch: int) -> str | None:
        """Why the returned weights are not the last epoch's, or None when they are."""
        if self.best_epoch == last_epoch:
            return None
        which = "the starting weights" if self.best_epoch < 0 else \
            f"the weights of epoch {self.best_epoch + 1}"
        return (f"kept {which}: {self.key} {self.best_value:.4g} (start {self.start:.4g}); "
                "fine-tuning did not improve on them")
