"""Quantization-aware fine-tuning: the fake-quant lowering of a Q/DQ graph trained through a
training backend (onnxruntime-training), with checkpoints, exact resume and emit."""

from qdq_onnx.errors import TrainingStopped
from qdq_onnx.finetune.callbacks import Callback, EpochPrinter, StopAfterSteps
from qdq_onnx.finetune.config import OPTIMIZERS, FitConfig, TrainConfig
from qdq_onnx.finetune.history import History
from qdq_onnx.finetune.state import RunState
from qdq_onnx.finetune.trainer import Trainer

__all__ = ["OPTIMIZERS", "Callback", "EpochPrinter", "FitConfig", "History", "RunState",
           "StopAfterSteps", "TrainConfig", "Trainer", "TrainingStopped"]
