"""Quantization-aware fine-tuning: the fake-quant lowering of a Q/DQ graph trained through a
training backend (onnxruntime-training), with checkpoints, exact resume and emit."""

from qdq_onnx.finetune.config import OPTIMIZERS, TrainConfig
from qdq_onnx.finetune.history import History
from qdq_onnx.finetune.loop import Trainer, TrainingStopped

__all__ = ["OPTIMIZERS", "History", "TrainConfig", "Trainer", "TrainingStopped"]
