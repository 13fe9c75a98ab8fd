"""Batches read ahead in a thread: same order, errors at the batch that caused them, and an
early exit that stops the reader."""

import threading

import pytest

from qdq_onnx.data.prefetch import Prefetch


def test_items_come_in_order_and_are_read_ahead():
    read, loaded = [], {k: threading.Event() for k in range(6)}

    def load(k):
        read.append(k)
        loaded[k].set()
        return k * 10

    with Prefetch(load, range(6), depth=2) as ahead:
        it = iter(ahead)
        assert next(it) == 0
        # While the caller works on item 0, the thread queues 1 and 2 (depth 2), reads 3
        # and waits with it: memory is bounded by depth + 1 batches. Sequenced on events.
        assert loaded[3].wait(timeout=60)
        assert read[:4] == [0, 1, 2, 3] and not loaded[5].is_set()
        assert next(it) == 10  # frees a place: 3 goes in, 4 is read
        assert loaded[4].wait(timeout=60) and read[:5] == [0, 1, 2, 3, 4]
        assert list(it) == [20, 30, 40, 50]


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
