"""The sampler semantics of a data-parallel step: each rank's share of a global batch is
disjoint from the others', together they are the whole batch, and calibration hands out
whole batches in turn."""

import numpy as np
import pytest

from qdq_onnx.parallel import shard_batches, shard_rows, world


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [64, 57, 3, 1])
def test_shards_are_disjoint_and_complete(size, rows):
    batch = np.random.default_rng(rows).permutation(1000)[:rows]
    shards = [shard_rows(batch, r, size) for r in range(size)]
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == sorted(batch.tolist())
    assert len(set(joined.tolist())) == rows
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_rank_r_takes_every_nth_index_like_distributed_sampler():
    order = np.arange(20)
    assert shard_rows(order, 1, 4).tolist() == [1, 5, 9, 13, 17]


def test_calibration_batches_go_round_the_ranks():
    batches = [f"b{i}" for i in range(7)]
    assert [list(shard_batches(batches, r, 3)) for r in range(3)] == [
        ["b0", "b3", "b6"], ["b1", "b4"], ["b2", "b5"]]


def test_a_process_started_without_a_launcher_is_alone():
    w = world()
    assert (w.rank, w.size, w.is_root) == (0, 1, True)
    x = np.arange(3.0)
    assert w.allreduce_sum(x, "t") is x and w.allreduce_max(x, "t") is x
