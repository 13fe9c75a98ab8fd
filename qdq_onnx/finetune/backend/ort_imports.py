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

from qdq_onnx.errors import QdqError


def _bare_package() -> None:
    if "onnxruntime.training" in sys.modules:
        return
    try:
        import onnxruntime
    except ImportError as exc:
        raise QdqError("fine-tuning needs onnxruntime-training-cpu (or the CUDA build "
                       "onnxruntime-training for GPUs)") from exc
    path = os.path.join(os.path.dirname(onnxruntime.__file__), "training")
    if not os.path.isdir(path):
        raise QdqError("the installed onnxruntime has no training support: install "
                       "onnxruntime-training-cpu==1.19.2 instead of onnxruntime")
    pkg = types.ModuleType("onnxruntime.training")
    pkg.__path__ = [path]
    pkg.__package__ = "onnxruntime.training"
    sys.modules["onnxruntime.training"] = pkg


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
