"""PyTorch, imported only when the torch backend is chosen (torch stays out of every path
that does not fine-tune), with one clear line when it is missing."""

from __future__ import annotations

import importlib.util
import sys

from qdq_onnx.errors import RuntimeMissing


def missing_torch() -> RuntimeMissing:
    here = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    return RuntimeMissing(
        "the torch training backend needs PyTorch, which this environment lacks: install "
        f"the extra qdq-onnx[torch] (any Python 3.10-3.14; this is {here})")


def available() -> bool:
    """Whether PyTorch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def torch_module():
    """The `torch` module, or RuntimeMissing naming the extra."""
    try:
        import torch
    except ImportError as err:
        raise missing_torch() from err
    return torch


def require() -> None:
    if not available():
        raise missing_torch()
