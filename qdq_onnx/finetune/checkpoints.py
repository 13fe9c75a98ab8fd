"""Checkpoints: one folder per checkpoint (the backend's state: weights and optimizer; the
loop's state and weight snapshots), renamed into place complete, then named by
`latest.json`; the newest few are kept. A process killed at any moment leaves the previous
checkpoint intact and named.

When to write one is the CheckpointPolicy's call: every N steps and/or every M minutes, plus
the loop's own points (epoch ends, interruptions)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np

from qdq_onnx.errors import QdqError
from qdq_onnx.files.atomic import write_text_atomic
from qdq_onnx.finetune.backend.base import TrainingBackend

LATEST = "latest.json"
STATE = "state"  # the backend's checkpoint inside a checkpoint folder
LOOP = "loop.json"
ARRAYS = "snapshots.npz"
PREFIX = "ckpt-step"


class CheckpointPolicy:
    """Periodic checkpoints: due after `every_steps` steps or `every_minutes` minutes since
    the last one (either may be None)."""

    def __init__(self, every_steps: int | None, every_minutes: float | None) -> None:
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.saved(0)

    def saved(self, step: int) -> None:
        """A checkpoint was written at `step` (or the run started there)."""
        self.last_step, self.last_time = step, monotonic()

    def due(self, step: int) -> bool:
        """Whether a periodic checkpoint is due after `step`."""
        if self.every_steps is not None and step - self.last_step >= self.every_steps:
            return True
        return self.every_minutes is not None and \
            monotonic() - self.last_time >= 60.0 * self.every_minutes


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoint folder of one model and configuration (its fingerprint)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str, keep: int = 2) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise QdqError(f"{self.folder}: the checkpoint directory is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fingerprint, self.keep = fingerprint, keep

    def save(self, backend: TrainingBackend, record: dict[str, Any],
             arrays: dict[str, np.ndarray]) -> Path:
        """Write a checkpoint of `backend` with the loop's `record` and `arrays`, name it in
        `latest.json`, drop all but the newest `keep`; returns its folder."""
        name = f"{PREFIX}{record['step']:07d}"
        tmp = self.folder / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            backend.save_checkpoint(tmp / STATE)
            (tmp / LOOP).write_text(json.dumps(record) + "\n")
            if arrays:
                np.savez(tmp / ARRAYS, **arrays)
            for f in tmp.iterdir():
                _fsync(f)
            final = self.folder / name
            if final.exists():  # the same step again (an epoch end right after a period)
                old = self.folder / f".{name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        info = {"checkpoint": name, "fingerprint": self.fingerprint, **record}
        write_text_atomic(self.folder / LATEST, json.dumps(info, indent=1) + "\n")
        self._prune(name)
        return final

    def _prune(self, newest: str) -> None:
        found = sorted(p.name for p in self.folder.glob(f"{PREFIX}*"))
        keep = set(found[-self.keep:]) | {newest}
        for name in found:
            if name not in keep:
                path = self.folder / name
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def load(self, backend: TrainingBackend) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Restore the newest checkpoint into `backend`; its loop record and snapshots."""
        latest = self.folder / LATEST
        if not latest.is_file():
            raise QdqError(f"{self.folder}: no checkpoint to resume from ({LATEST} is missing)")
        try:
            info = json.loads(latest.read_text())
        except json.JSONDecodeError as exc:
            raise QdqError(f"{latest}: unreadable ({exc})") from exc
        if info.get("fingerprint") != self.fingerprint:
            raise QdqError(f"{self.folder}: the checkpoint belongs to another model or "
                           "training configuration (fingerprint mismatch); use a new "
                           "checkpoint directory or the original model and settings")
        path = self.folder / info["checkpoint"]
        if not path.exists():
            raise QdqError(f"{path}: checkpoint is missing")
        # A folder holds the backend state and the loop's snapshots; a file is a checkpoint
        # written before checkpoints were folders (the state alone).
        backend.load_checkpoint(path / STATE if path.is_dir() else path)
        arrays: dict[str, np.ndarray] = {}
        if (path / ARRAYS).is_file():
            with np.load(path / ARRAYS, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return info, arrays
