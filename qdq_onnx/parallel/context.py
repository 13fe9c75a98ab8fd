"""What a stage needs to know about the run it is part of, passed in, never looked up:
`RunContext` (the world of ranks). The pipeline makes one per
call from the process (`RunContext.of_process()`: the MPI launcher's ranks, or one
process); stages called directly default to one process."""

from __future__ import annotations

from dataclasses import dataclass, field

from qdq_onnx.parallel.ranks import World


def _single() -> World:
    from qdq_onnx.parallel.world import Single

    return Single()


@dataclass(frozen=True)
class RunContext:
    """The ranks a stage runs on (`world`; rank 0 writes and prints)."""

    world: World = field(default_factory=_single)

    @property
    def is_root(self) -> bool:
        return self.world.is_root

    @classmethod
    def of_process(cls) -> RunContext:
        """This process's context: every rank an MPI launcher started, else one process."""
        from qdq_onnx.parallel.world import world

        return cls(world())
