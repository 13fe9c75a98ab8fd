"""The interface the training loop uses: a training backend behind it (onnxruntime-training
or torch), so another can be added without touching the loop, checkpoints or emit.

Optional: `follow_weight_scales(weights, floor)` (recompute every weight scale from its
weight where the parameters live) and `floor_parameters(names, floor)`; a backend that has
them saves the trainer a host round trip per step (the torch backend on a GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class TrainingBackend(Protocol):
    """Trains the parameters of one fake-quant training graph."""

    input_names: list[str]  # the order `forward_backward`/`evaluate` take arrays in

    def forward_backward(self, args: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        """Loss and model outputs (in graph output order) of one batch in training mode;
        gradients are kept for `step`."""

    def step(self, learning_rate: float) -> None:
        """Apply the optimizer to the kept gradients, then clear them."""

    def evaluate(self, args: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        """Loss and model outputs of one batch in evaluation mode (no gradients)."""

    def get_parameter(self, name: str) -> np.ndarray: ...

    def gradients(self, names: list[str]) -> list[np.ndarray]:
        """The kept gradients of `names` (data-parallel runs reduce them); valid until the
        next step: copy to keep."""

    def set_gradients(self, names: list[str], values: list[np.ndarray]) -> None:
        """Replace the kept gradients that `step` applies."""

    def set_parameter(self, name: str, value: np.ndarray) -> None: ...

    def snapshot(self) -> np.ndarray:
        """All trainable parameters as one flat copy."""

    def restore(self, snapshot: np.ndarray) -> None: ...

    def save_checkpoint(self, path: Path) -> None:
        """Parameters and optimizer state, to a new file or folder at `path`."""

    def load_checkpoint(self, path: Path) -> None: ...

    def close(self) -> None: ...
