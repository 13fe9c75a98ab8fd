"""Quantization-aware fine-tuning: the fake-quant lowering of a Q/DQ graph trained through a
training backend (onnxruntime-training), with checkpoints, exact resume and emit. The names
below load on first use, so reading a setting's default does not import the trainer."""

from __future__ import annotations

from qdq_onnx.lazy import lazy_names

_WHERE = {
    "TrainingStopped": "qdq_onnx.errors",
    "Callback": "qdq_onnx.finetune.callbacks", "EpochPrinter": "qdq_onnx.finetune.callbacks",
    "StopAfterSteps": "qdq_onnx.finetune.callbacks",
    "OPTIMIZERS": "qdq_onnx.finetune.config", "FitConfig": "qdq_onnx.finetune.config",
    "TrainConfig": "qdq_onnx.finetune.config", "History": "qdq_onnx.finetune.history",
    "RunState": "qdq_onnx.finetune.state", "Trainer": "qdq_onnx.finetune.trainer",
}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
