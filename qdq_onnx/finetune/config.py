"""Fine-tuning settings, validated before any work starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.losses import LossSpec
from qdq_onnx.finetune.schedules import SCHEDULES

OPTIMIZERS = ("adam", "adamw", "sgd")
# Settings that change what is trained: a checkpoint made with others cannot be resumed.
FINGERPRINTED = ("loss", "from_logits", "optimizer", "weight_decay", "learn_scales",
                 "weight_bits")


@dataclass
class TrainConfig:
    """How to fine-tune: optimizer, learning rate and schedule, loss, what is trained.

    Optimizers: adam, adamw, sgd. Losses: sparse_categorical_crossentropy,
    categorical_crossentropy, binary_crossentropy, mse (from logits, or from probabilities
    with from_logits=False). Schedules: constant, cosine, step (x gamma every step_size
    epochs), each with optional linear warm-up. learn_scales trains activation scales (LSQ
    gradient); weight scales always follow the weights."""

    optimizer: str = "adam"
    # Measured (scripts/bench_finetune_defaults.py): 1e-5 with cosine decay is the only
    # setting that helped or held on both a converged and a less-trained MNIST CNN; 1e-3 and
    # 1e-4 constant lost 0.86 and 0.26 points on the converged one.
    learning_rate: float = 1e-5
    loss: str = "sparse_categorical_crossentropy"
    from_logits: bool = True
    metrics: tuple[str, ...] = ("accuracy",)
    weight_decay: float = 0.01  # AdamW only; "adam" means 0
    schedule: str = "cosine"
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1
    learn_scales: bool = False
    weight_bits: int = 8
    seed: int = 0
    device: str = "cpu"  # "cuda" with the onnxruntime-training CUDA build

    def validate(self) -> None:
        """Raise QdqError naming the first invalid setting."""
        if self.optimizer not in OPTIMIZERS:
            raise QdqError(f"unknown optimizer {self.optimizer!r}; use one of "
                           f"{', '.join(OPTIMIZERS)}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0
                and math.isfinite(self.learning_rate)):
            raise QdqError(f"learning rate must be a positive number, got "
                           f"{self.learning_rate!r}")
        if self.schedule not in SCHEDULES:
            raise QdqError(f"unknown schedule {self.schedule!r}; use one of "
                           f"{', '.join(SCHEDULES)}")
        if self.weight_decay < 0:
            raise QdqError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 2 <= self.weight_bits <= 8:
            raise QdqError(f"weight_bits must be 2-8, got {self.weight_bits}")
        unknown = [m for m in self.metrics if m not in ("accuracy", "acc")]
        if unknown:
            raise QdqError(f"unknown metric(s) {unknown}; supported: accuracy")
        LossSpec(self.loss, self.from_logits).kind  # noqa: B018 - validates the name

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings recorded with checkpoints and in the emitted model (no device)."""
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        d.pop("device")
        return d
