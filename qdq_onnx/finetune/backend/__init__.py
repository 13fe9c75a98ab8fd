"""Training backends by name: `TrainConfig(backend=NAME)` selects one. A backend is a
factory `(graph, objective, config, work_dir) -> TrainingBackend` (see `base.py`);
`register_backend` adds one. Two are built in: `onnxruntime` (onnxruntime-training, Python
3.10-3.12) and `torch` (PyTorch autograd executing the same training graph, CPU or CUDA, any
Python torch has wheels for). `auto`, the default, is onnxruntime-training where it is
installed, else torch. Nothing here imports a training engine: the factory does, when it is
called."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BackendFactory = Callable[[Any, Any, Any, Any], Any]
AUTO = "auto"


def _onnxruntime(graph, objective, config, work_dir):
    from qdq_onnx.finetune.backend.ort_backend import OrtTrainingBackend

    return OrtTrainingBackend(graph, objective, config.optimizer, config.weight_decay,
                              config.device, work_dir)


def _torch(graph, objective, config, work_dir):
    from qdq_onnx.finetune.backend.torch_backend import TorchBackend

    return TorchBackend(graph, objective, config.optimizer, config.weight_decay,
                        config.device, work_dir)


BACKENDS: dict[str, BackendFactory] = {"onnxruntime": _onnxruntime, "torch": _torch}
# Backends that train the graph as it is: the lowering of ops onnxruntime-training cannot
# differentiate (finetune/lowering*.py) is for the onnxruntime backend only.
NO_LOWERING = {"torch"}


def resolve_backend(name: str) -> str:
    """The backend `name` means: `auto` is onnxruntime where onnxruntime-training is
    installed, else torch where PyTorch is, else onnxruntime (whose error names its extra)."""
    if name != AUTO:
        return name
    from qdq_onnx.finetune.backend import ort_imports, torch_imports

    if ort_imports.available():
        return "onnxruntime"
    return "torch" if torch_imports.available() else "onnxruntime"


def require_backend(name: str) -> None:
    """Fail early, with one line naming what to install, when the engine behind the
    backend `name` is missing (onnxruntime-training, or PyTorch for `torch`)."""
    name = resolve_backend(name)
    if name == "onnxruntime":
        from qdq_onnx.finetune.backend import ort_imports, torch_imports

        if not ort_imports.available() and not torch_imports.available():
            raise ort_imports.missing_any_engine()
        ort_imports.require()
    elif name == "torch":
        from qdq_onnx.finetune.backend import torch_imports

        torch_imports.require()


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory` selectable as `TrainConfig(backend=name)`."""
    if not callable(factory):
        raise TypeError(f"backend {name!r}: the factory must be callable")
    if name == AUTO:
        raise ValueError(f"{AUTO!r} is reserved: it picks an installed backend")
    BACKENDS[name] = factory


def backend_description(name: str, device: str = "cpu") -> str:
    """What trains, in words: the backend `name` resolves to, its engine's version and the
    device ("torch (PyTorch 2.13.0+cpu) on cpu")."""
    from importlib import metadata

    name = resolve_backend(name)
    engines = {"onnxruntime": ("onnxruntime-training", ("onnxruntime-training-cpu",
                                                       "onnxruntime-training")),
               "torch": ("PyTorch", ("torch",))}
    label, dists = engines.get(name, (name, ()))
    for dist in dists:
        try:
            return f"{name} ({label} {metadata.version(dist)}) on {device}"
        except metadata.PackageNotFoundError:
            continue
    return f"{name} on {device}"
