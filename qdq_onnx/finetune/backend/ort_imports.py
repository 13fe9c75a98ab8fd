"""Import onnxruntime-training's `artifacts` and `api` without its package __init__.

onnxruntime-training 1.19's `onnxruntime/training/__init__.py` imports torch (upstream
microsoft/onnxruntime#22070) although the offline-artifacts and training-API submodules do
not need it. This registers a bare package object for `onnxruntime.training` (same
`__path__`, nothing executed, nothing patched) so those submodules import on their own.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

from qdq_onnx.errors import RuntimeMissing


def missing_training() -> RuntimeMissing:
    """The one-line error for an environment without onnxruntime-training."""
    here = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    return RuntimeMissing(
        "fine-tuning needs onnxruntime-training, which this environment lacks: install "
        "the extra qdq-onnx[train] (onnxruntime-training-cpu 1.19, whose wheels exist for "
        f"Python 3.10-3.12; this is {here}); every other command works without it")


def missing_any_engine() -> RuntimeMissing:
    """The one-line error where neither training engine is installed."""
    here = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    return RuntimeMissing(
        "fine-tuning needs a training engine, which this environment lacks: install the "
        "extra qdq-onnx[train] (onnxruntime-training-cpu 1.19, whose wheels exist for "
        f"Python 3.10-3.12) or qdq-onnx[torch] (PyTorch, any Python; this is {here}); "
        "every other command works without them")


def available() -> bool:
    """Whether onnxruntime-training is installed (its training folder is there), without
    importing it."""
    import importlib.util

    loaded = sys.modules.get("onnxruntime")
    if loaded is not None:  # already imported (or stood in for): look beside its file
        paths = [os.path.dirname(getattr(loaded, "__file__", None) or "")]
    else:
        spec = importlib.util.find_spec("onnxruntime")
        paths = list(spec.submodule_search_locations or []) if spec is not None else []
    return any(p and os.path.isdir(os.path.join(p, "training", "api")) for p in paths)


def _bare_package() -> None:
    if "onnxruntime.training" in sys.modules:
        return
    try:
        import onnxruntime
    except ImportError as err:
        raise missing_training() from err
    path = os.path.join(os.path.dirname(onnxruntime.__file__), "training")
    if not os.path.isdir(path) or not os.path.isdir(os.path.join(path, "api")):
        raise missing_training()
    pkg = types.ModuleType("onnxruntime.training")
    pkg.__path__ = [path]
    pkg.__package__ = "onnxruntime.training"
    sys.modules["onnxruntime.training"] = pkg


def require() -> None:
    """RuntimeMissing (one line naming the extra) unless onnxruntime-training is here."""
    _bare_package()


def artifacts():
    """`onnxruntime.training.artifacts` (generate_artifacts, LossType, OptimType)."""
    _bare_package()
    return importlib.import_module("onnxruntime.training.artifacts")


def onnxblock():
    _bare_package()
    return importlib.import_module("onnxruntime.training.onnxblock")


def api():
    """`onnxruntime.training.api` (Module, Optimizer, CheckpointState)."""
    _bare_package()
    return importlib.import_module("onnxruntime.training.api")
