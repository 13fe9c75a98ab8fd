"""Data parallelism over MPI (mpi4py, the `qdq-onnx[distributed]` extra): the world a process
runs in (`world()`: one process, or every rank its MPI launcher started), collectives with
timeouts, disjoint shards of each epoch's order, and the local launcher behind
`--workers N`. Nothing here imports mpi4py unless an MPI launcher started the process."""

from qdq_onnx.parallel.config import ParallelConfig
from qdq_onnx.parallel.shard import shard_batches, shard_rows
from qdq_onnx.parallel.world import (
    CollectiveTimeout,
    Single,
    World,
    world,
)

__all__ = ["CollectiveTimeout", "ParallelConfig", "Single", "World", "shard_batches",
           "shard_rows", "world"]
