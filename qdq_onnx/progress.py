"""Progress bars (tqdm) that stay quiet when output is not a terminal or when disabled."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


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


class captured_stderr:
    """Capture file descriptor 2 (C++ logging) into a temporary file for the duration.

    C++ libraries log to fd 2 whatever the Python-side settings (onnxruntime-training logs
    every graph transformer while it builds gradient graphs; TensorFlow and tf2onnx print
    absl warnings); the text is kept in `.text` for error messages instead of flooding the
    terminal."""

    def __enter__(self) -> captured_stderr:
        import os
        import tempfile

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc) -> None:
        import os

        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
