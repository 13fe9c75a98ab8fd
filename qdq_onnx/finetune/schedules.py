"""Learning-rate schedules (per optimizer step), with optional linear warm-up."""

from __future__ import annotations

import math

from qdq_onnx.errors import QdqError

SCHEDULES = ("constant", "cosine", "step")


def learning_rate(base: float, step: int, total_steps: int, schedule: str = "constant",
                  warmup_steps: int = 0, step_size: int = 1, gamma: float = 0.1,
                  steps_per_epoch: int = 1) -> float:
    """The rate for optimizer step `step` (0-based). `step` decays by `gamma` every
    `step_size` epochs; `cosine` anneals to 0 at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if schedule == "constant":
        return base
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        t = min(max(step - warmup_steps, 0) / span, 1.0)
        return base * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return base * gamma ** (epoch // max(step_size, 1))
    raise QdqError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
