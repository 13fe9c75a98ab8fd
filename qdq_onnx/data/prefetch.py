"""Read the next batches in a background thread while the current one trains.

Reading a batch (memory-mapped rows, a cast, the NaN check) releases the GIL in numpy and in
`os.pread`, so one thread a few batches ahead hides it behind the onnxruntime step, which
releases the GIL too. Errors raised while reading reach the caller at the batch that
caused them; leaving the loop early stops the thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_DONE = object()


class Prefetch(Generic[K, V]):
    """Iterate `read(key)` for each key, computed ahead in a thread: `depth` items queued
    plus the one being read, so memory is bounded by depth + 1 batches.

    Use as a context manager (or call `close`) so an early exit stops the thread."""

    def __init__(self, read: Callable[[K], V], keys: Iterable[K], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._read, self._keys = read, keys
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="qdq-onnx-prefetch",
                                        daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for key in self._keys:
                if self._stop.is_set():
                    return
                self._put((self._read(key), None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((None, exc))
            return
        self._put((_DONE, None))

    def _put(self, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[V]:
        while True:
            value, error = self._queue.get()
            if error is not None:
                self.close()
                raise error
            if value is _DONE:
                return
            yield value

    def close(self) -> None:
        """Stop reading ahead and wait for the thread."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> Prefetch[K, V]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
