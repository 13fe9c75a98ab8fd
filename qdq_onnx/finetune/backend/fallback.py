"""`auto`'s second engine: where onnxruntime-training cannot build or run a model's training
graph (an op without a gradient builder, control flow, a gradient kernel that fails at the
first step) and PyTorch is installed, the trainer trains with the torch backend instead,
before any step, and says why. An explicitly named backend never falls back."""

from __future__ import annotations

from typing import Any

import numpy as np

from qdq_onnx.errors import QdqError


def may_fall_back(trainer: Any) -> bool:
    """Whether `trainer` may still switch to torch: `auto` chose onnxruntime, no step is
    trained yet, and PyTorch is installed."""
    if not trainer._auto or trainer.backend_name != "onnxruntime" \
            or getattr(trainer, "steps_done", 0):
        return False
    from qdq_onnx.finetune.backend import torch_imports

    return torch_imports.available()


def probe_step(trainer: Any, feeds: dict[str, np.ndarray], targets: dict[str, np.ndarray],
               batch_size: int) -> None:
    """Run one forward and backward pass of the first batch on onnxruntime-training (no
    optimizer step, its gradients discarded): a gradient that fails to run moves the
    trainer to torch now rather than failing the run at its first step."""
    rows = np.arange(min(batch_size, next(iter(feeds.values())).shape[0]))
    try:
        trainer.backend.forward_backward(trainer.args(feeds, rows, targets))
    except QdqError as exc:
        trainer.fall_back(exc, trainer.input_dims)
        return
    trainer.backend.discard_gradients()
