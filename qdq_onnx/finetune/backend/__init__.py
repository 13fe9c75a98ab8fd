"""Training backends by name: `TrainConfig(backend=NAME)` selects one. A backend is a
factory `(graph, objective, config, work_dir) -> TrainingBackend` (see `base.py`);
`register_backend` adds one. Nothing here imports a training engine: the factory does, when
it is called."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BackendFactory = Callable[[Any, Any, Any, Any], Any]


def _onnxruntime(graph, objective, config, work_dir):
    from qdq_onnx.finetune.backend.ort_backend import OrtTrainingBackend

    return OrtTrainingBackend(graph, objective, config.optimizer, config.weight_decay,
                              config.device, work_dir)


BACKENDS: dict[str, BackendFactory] = {"onnxruntime": _onnxruntime}


def require_backend(name: str) -> None:
    """Fail early, with one line naming what to install, when the engine behind the
    backend `name` is missing (onnxruntime-training for the default one)."""
    if name == "onnxruntime":
        from qdq_onnx.finetune.backend import ort_imports

        ort_imports.require()


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory` selectable as `TrainConfig(backend=name)`."""
    if not callable(factory):
        raise TypeError(f"backend {name!r}: the factory must be callable")
    BACKENDS[name] = factory
