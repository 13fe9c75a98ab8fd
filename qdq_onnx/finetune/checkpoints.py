"""Checkpoints: the backend's state (weights + optimizer) plus the loop position in
`latest.json`, both written atomically; older checkpoints pruned."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from qdq_onnx.errors import QdqError
from qdq_onnx.files.atomic import write_text_atomic
from qdq_onnx.finetune.backend.base import TrainingBackend

LATEST = "latest.json"


class CheckpointStore:
    """One folder of checkpoints for one model and configuration (its fingerprint)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint

    def save(self, backend: TrainingBackend, position: dict[str, Any]) -> None:
        """Write the backend state, then `latest.json` naming it, then drop older ones."""
        name = f"ckpt-step{position['step']:07d}"
        tmp = self.folder / f".{name}.tmp"
        backend.save_checkpoint(tmp)
        os.replace(tmp, self.folder / name)
        info = {"checkpoint": name, "fingerprint": self.fingerprint, **position}
        write_text_atomic(self.folder / LATEST, json.dumps(info, indent=1) + "\n")
        for old in self.folder.glob("ckpt-step*"):
            if old.name != name:
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)

    def load(self, backend: TrainingBackend) -> dict[str, Any]:
        """Restore the latest checkpoint into `backend`; returns its loop position."""
        latest = self.folder / LATEST
        if not latest.is_file():
            raise QdqError(f"{self.folder}: no checkpoint to resume from ({LATEST} is missing)")
        try:
            info = json.loads(latest.read_text())
        except json.JSONDecodeError as exc:
            raise QdqError(f"{latest}: unreadable ({exc})") from None
        if info.get("fingerprint") != self.fingerprint:
            raise QdqError(f"{self.folder}: the checkpoint belongs to another model or "
                           "training configuration (fingerprint mismatch); use a new "
                           "--checkpoint-dir or the original model and settings")
        path = self.folder / info["checkpoint"]
        if not path.exists():
            raise QdqError(f"{path}: checkpoint file is missing")
        backend.load_checkpoint(path)
        return info
