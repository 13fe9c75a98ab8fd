"""Atomic writes for small text/JSON outputs: temporary file in the same folder, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qdq_onnx.errors import QdqError


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise QdqError(f"{out}: the output folder {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
