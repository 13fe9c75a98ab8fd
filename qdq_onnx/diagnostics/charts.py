"""Charts as PNG bytes (matplotlib, headless), for files and for the HTML report."""

from __future__ import annotations

import io
from typing import Any

from qdq_onnx.errors import QdqError


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend, or a QdqError saying how to
    install it (it is the optional `report` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise QdqError("charts need matplotlib: pip install 'qdq-onnx[report]'") from err
    return plt


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def write_png(data: bytes, path: str) -> None:
    from qdq_onnx.files.atomic import write_bytes_atomic

    write_bytes_atomic(path, data)
