"""Synchronous data parallelism for the loop (what PyTorch DDP does, on onnxruntime-training):
after each rank's forward/backward on its shard of the global batch, the gradients are
summed over the ranks weighted by each shard's size and written back into onnxruntime's
gradient buffers, so every rank's optimizer applies the gradient of the whole global batch
and the ranks stay identical (weights, optimizer state, weight scales). The batch loss and
accuracy ride in the same buffer.

onnxruntime-training 1.19.2 exposes each parameter's gradient after `Module.__call__` in
train mode (`CheckpointState.parameters[name].grad`, a copy) and accepts a new value in
place (`OrtValue.update_inplace`, checked by tests/parallel: an SGD step then applies
exactly the written gradient)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from qdq_onnx.parallel import World


@dataclass
class Reduced:
    """One step's figures over every rank: mean loss, samples, accuracy counts."""

    loss: float
    samples: int
    hits: float
    counted: float


class GradientSync:
    """Averages the gradients of `names` over the ranks of `world` before each step."""

    def __init__(self, backend, world: World, names: list[str]) -> None:
        self.backend, self.world, self.names = backend, world, list(names)
        self.seconds = 0.0  # in `reduce`: gradients out, reduced, written back
        self._flat: np.ndarray | None = None

    def reduce(self, samples: int, loss: float, correct: tuple[int, int] | None,
               step: int) -> Reduced:
        """Replace this rank's gradients (of `samples` rows; 0 for a placeholder batch) by
        the global batch's; the step's loss and accuracy over every rank. One flat float32
        buffer, filled, reduced and divided in place (a 100 MB gradient is copied out once
        and back once)."""
        began = time.perf_counter()
        grads = self.backend.gradients(self.names)
        if self._flat is None:
            self._flat = np.empty(sum(g.size for g in grads) + 4, np.float32)
        flat, views, at = self._flat, [], 0
        for g in grads:
            view = flat[at:at + g.size].reshape(g.shape)
            np.multiply(g, np.float32(samples), out=view)
            views.append(view)
            at += g.size
        hits, counted = correct if correct is not None and samples else (0, 0)
        flat[at:] = (loss * samples if samples else 0.0, samples, hits, counted)
        self.world.allreduce_sum_inplace(flat, f"the gradient allreduce of step {step + 1}")
        figures = flat[at:].astype(np.float64)
        count = max(int(round(figures[1])), 1)
        np.divide(flat[:at], np.float32(count), out=flat[:at])
        self.backend.set_gradients(self.names, views)
        self.seconds += time.perf_counter() - began
        return Reduced(float(figures[0] / count), count, float(figures[2]), float(figures[3]))

    def any(self, flag: bool, what: str) -> bool:
        """Whether any rank has `flag` set (a stop request: all ranks stop together)."""
        return bool(self.world.allreduce_max(np.array([int(flag)], np.int32), what)[0])
