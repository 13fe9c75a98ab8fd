"""Atomic writes for small text/JSON outputs: temporary file in the same folder, then rename."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from qdq_onnx.errors import QdqError


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file renamed into place; an error (disk
    full) leaves nothing behind and is a one-line QdqError."""
    out = Path(path)
    if out.is_dir():
        raise QdqError(f"{out}: is a folder; give a file path for the output")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise QdqError(f"{out}: the output folder {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise write_failed(out, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(out, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def write_failed(out: Path, exc: OSError) -> QdqError:
    """The one-line error for an output that could not be written (disk full, quota,
    permissions): nothing was left behind."""
    why = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
        else (exc.strerror or str(exc))
    return QdqError(f"{out}: could not be written ({why}); nothing was written")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))
