"""Batches read ahead in a thread: same order, errors at the batch that caused them, and an
early exit that stops the reader."""

import threading
import time

import pytest

from qdq_onnx.data.prefetch import Prefetch


def _wait_for(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.005)
    return condition()


def test_items_come_in_order_and_are_read_ahead():
    read = []

    def load(k):
        read.append(k)
        return k * 10

    with Prefetch(load, range(6), depth=2) as ahead:
        it = iter(ahead)
        assert next(it) == 0
        # While the caller works on item 0, the thread queues 1 and 2 (depth 2), reads 3
        # and waits with it: memory is bounded by depth + 1 batches.
        assert _wait_for(lambda: len(read) == 4)
        time.sleep(0.05)
        assert read == [0, 1, 2, 3]
        assert list(it) == [10, 20, 30, 40, 50]


def test_a_read_error_reaches_the_caller_at_its_item():
    def load(k):
        if k == 3:
            raise ValueError("batch 3 holds NaN")
        return k

    got = []
    with pytest.raises(ValueError, match="batch 3 holds NaN"), Prefetch(load, range(6)) as p:
        for v in p:
            got.append(v)
    assert got == [0, 1, 2]


def test_leaving_early_stops_the_reader():
    before = threading.active_count()
    read = []
    p = Prefetch(lambda k: read.append(k) or k, range(10_000), depth=2)
    with p:
        for v in p:
            if v == 1:
                break
    assert not p._thread.is_alive()
    assert len(read) <= 5 and threading.active_count() == before


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetch(lambda k: k, range(3), depth=0)
