"""Error types: user errors (bad input, exit 2) versus everything else (bugs, exit 1)."""

from __future__ import annotations


class QdqError(Exception):
    """A problem with the user's input or request.

    The CLI prints the message on one line and exits with status 2; the message must name the
    problem and, where possible, what to do about it.
    """


class UnsupportedModelError(QdqError):
    """The model is valid ONNX but outside what qdq-onnx supports (opset, ops, structure)."""


class SpecError(QdqError):
    """A quantization spec (Python or YAML) names something that does not exist or contradicts
    itself."""
