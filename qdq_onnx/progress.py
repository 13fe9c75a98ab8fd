"""Progress bars (tqdm) that stay quiet when output is not a terminal or when disabled."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass


@contextmanager
def progress(total: int | None, desc: str, unit: str = "it", enable: bool = True) -> Iterator:
    if not enable or not sys.stderr.isatty():
        yield _Null()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def epoch_printer(stream: TextIO | None = None):
    """An `on_epoch_end` callback writing Keras-style epoch lines to `stream` (stdout)."""
    def report(epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> None:
        text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        out = stream if stream is not None else sys.stdout
        out.write(f"epoch {epoch + 1}/{epochs} - {seconds:.1f}s - {text}\n")
        out.flush()
    return report
