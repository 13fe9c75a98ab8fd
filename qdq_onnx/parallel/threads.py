"""Threads within one rank: numpy releases the GIL on large arrays, so independent
per-weight work (typing a remainder) runs on the rank's cores."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def thread_count(threads: int) -> int:
    """`threads`, or this machine's cores where it is 0 (the runtime's default)."""
    return threads if threads > 0 else (os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """fn(item) for each item, in order, on up to `threads` threads (0: the cores). At most
    twice as many results as threads are held at once, so the results of a whole model's
    weights are never all in memory together."""
    n = thread_count(threads)
    if n == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="qdq-onnx") as pool:
        window: deque = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * n:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
