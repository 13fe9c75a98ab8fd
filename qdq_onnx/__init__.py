"""qdq-onnx: TensorRT-oriented Q/DQ placement and quantization-aware training on ONNX.

The public names below load on first use, so `import qdq_onnx.<module>` (the CLI, a stage)
does not import the whole package."""

from __future__ import annotations

import importlib
from typing import Any

from qdq_onnx.version import __version__

_PUBLIC = {
    "CustomQDQInsertionCase": "qdq_onnx.placement.cases",
    "ImageFolder": "qdq_onnx.data.images",
    "PlacementPlan": "qdq_onnx.placement.plan",
    "QdqError": "qdq_onnx.errors",
    "QuantizationSpec": "qdq_onnx.placement.spec",
    "QuantizedModel": "qdq_onnx.compat.api",
    "calibrate": "qdq_onnx.compat.api",
    "quantize_model": "qdq_onnx.compat.api",
}
_SUBMODULES = {"utils": "qdq_onnx.compat.utils", "pipeline": "qdq_onnx.pipeline"}

__all__ = ["CustomQDQInsertionCase", "ImageFolder", "PlacementPlan", "QdqError", "QuantizationSpec",
           "QuantizedModel", "__version__", "calibrate", "pipeline", "quantize_model", "utils"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'qdq_onnx' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
