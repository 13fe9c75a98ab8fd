"""Fine-tuning settings: what is trained and how (TrainConfig) and the loop of one run
(FitConfig), each a frozen object validated when it is made."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass

from qdq_onnx.errors import SettingError
from qdq_onnx.finetune.backend import AUTO, BACKENDS
from qdq_onnx.finetune.losses import LOSSES
from qdq_onnx.finetune.objective import DISTILL_LOSSES
from qdq_onnx.finetune.schedules import SCHEDULES

OPTIMIZERS = ("adam", "adamw", "sgd")
METRICS = ("accuracy", "acc")
# Settings that change what is trained: a checkpoint made with others cannot be resumed.
FINGERPRINTED = ("loss", "from_logits", "optimizer", "weight_decay", "learn_scales",
                 "weight_bits", "loss_weights", "distill", "distill_loss", "temperature")
# Settings that say where training runs, not what it computes: kept out of the emitted
# file's training record and of the checkpoint fingerprint.
_PLACE_ONLY = ("device", "backend", "weight_bits")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _count(value: object, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune: optimizer, learning rate and schedule, loss, what is trained.

    Optimizers: adam, adamw, sgd. Losses: sparse_categorical_crossentropy,
    categorical_crossentropy, binary_crossentropy, mse (from logits, or from probabilities
    with from_logits=False). Schedules: constant, cosine, step (x gamma every step_size
    epochs), each with optional linear warm-up. learn_scales trains activation scales (LSQ
    gradient); weight scales always follow the weights, in the precision scheme the model's
    placement plan gives them. `backend` names the training engine (`BACKENDS`: onnxruntime,
    torch; `auto` is onnxruntime-training where installed, else torch). `weight_bits` is
    deprecated: a 4-bit weight range is a placement setting
    (`PlacementConfig(weight_scheme="int8-4bit")`)."""

    optimizer: str = "adam"
    # Measured (scripts/bench_finetune_defaults.py): 1e-5 with cosine decay is the only
    # setting that helped or held on both a converged and a less-trained MNIST CNN; 1e-3 and
    # 1e-4 constant lost 0.86 and 0.26 points on the converged one.
    learning_rate: float = 1e-5
    # one loss for every output, a list in output order, or a dict by output name
    loss: str | dict | tuple = "sparse_categorical_crossentropy"
    from_logits: bool = True
    loss_weights: dict | tuple | None = None  # per output (list or dict), default 1 each
    # Self-distillation: the float model's outputs are the targets (no labels needed).
    distill: bool = False
    distill_loss: str | dict | tuple = "mse"  # "mse" or "kl" (softened logits), per output
    temperature: float = 2.0  # of the KL distillation loss
    metrics: tuple[str, ...] = ("accuracy",)
    weight_decay: float = 0.01  # AdamW only; "adam" means 0
    schedule: str = "cosine"
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1
    learn_scales: bool = False
    seed: int = 0
    # "cuda[:N]": the torch backend on a CUDA build of PyTorch, or the onnxruntime backend
    # on onnxruntime-training's CUDA build
    device: str = "cpu"
    # "auto": onnxruntime-training where it is installed, else torch (finetune says which)
    backend: str = AUTO
    weight_bits: int | None = None  # deprecated: the weights' scheme comes from the model

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", str(self.optimizer).lower())
        metrics = (self.metrics,) if isinstance(self.metrics, str) else self.metrics
        object.__setattr__(self, "metrics", tuple(metrics or ()))
        if self.optimizer not in OPTIMIZERS:
            raise SettingError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got "
                                            f"{self.optimizer!r}")
        if not (_number(self.learning_rate) and self.learning_rate > 0):
            raise SettingError("learning_rate", f"must be a positive number, got "
                                                f"{self.learning_rate!r}")
        self._check_per_output("loss", LOSSES, allow_none=True)
        self._check_per_output("distill_loss", DISTILL_LOSSES)
        weights = self.loss_weights
        if weights is not None:
            values = list(weights.values()) if isinstance(weights, dict) else weights
            if not isinstance(values, (list, tuple)) or not all(
                    _number(w) and w >= 0 for w in values):
                raise SettingError("loss_weights", f"must be numbers >= 0 by output (a list "
                                                   f"or dict), got {weights!r}")
        if not (_number(self.temperature) and self.temperature > 0):
            raise SettingError("temperature", f"must be a positive number, got "
                                              f"{self.temperature!r}")
        if self.schedule not in SCHEDULES:
            raise SettingError("schedule", f"must be one of {', '.join(SCHEDULES)}, got "
                                           f"{self.schedule!r}")
        if not (_number(self.weight_decay) and self.weight_decay >= 0):
            raise SettingError("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        for name in ("warmup_steps", "seed"):
            if not _count(getattr(self, name), 0):
                raise SettingError(name, f"must be an integer >= 0, got "
                                         f"{getattr(self, name)!r}")
        if not _count(self.step_size):
            raise SettingError("step_size", f"must be a positive integer, got "
                                            f"{self.step_size!r}")
        if not (_number(self.gamma) and self.gamma > 0):
            raise SettingError("gamma", f"must be a positive number, got {self.gamma!r}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise SettingError("metrics", f"may only hold accuracy, got {unknown}")
        if self.backend not in BACKENDS and self.backend != AUTO:
            raise SettingError("backend", f"must be one of {', '.join([AUTO, *BACKENDS])}, "
                                          f"got {self.backend!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?",
                                                                 self.device):
            raise SettingError("device", f"must be cpu or cuda[:N], got {self.device!r}")
        if self.weight_bits is not None:
            if not (_count(self.weight_bits, 2) and self.weight_bits <= 8):
                raise SettingError("weight_bits", f"must be 2-8, got {self.weight_bits!r}")
            warnings.warn("TrainConfig(weight_bits=...) is deprecated: the weights' range "
                          "comes from the model's placement plan; quantize with "
                          "PlacementConfig(weight_scheme='int8-4bit') instead",
                          DeprecationWarning, stacklevel=3)

    def _check_per_output(self, name: str, allowed, allow_none: bool = False) -> None:
        value = getattr(self, name)
        if isinstance(value, list):
            object.__setattr__(self, name, tuple(value))
            value = tuple(value)
        values = list(value.values()) if isinstance(value, dict) else (
            list(value) if isinstance(value, tuple) else [value])
        bad = [v for v in values if not (v in allowed or (allow_none and v is None
                                                         and len(values) > 1))]
        if bad or not values:
            raise SettingError(name, f"must be one of {', '.join(sorted(allowed))} (or one "
                                     f"per output, as a list or a dict), got {value!r}")

    def fingerprint_fields(self) -> dict:
        """The settings recorded with checkpoints and in the emitted model (not where
        training ran)."""
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        for name in _PLACE_ONLY:
            d.pop(name)
        # Recorded when used: a file trained without them keeps the record it always had.
        if d["loss_weights"] is None:
            d.pop("loss_weights")
        if not d["distill"]:
            for name in ("distill", "distill_loss", "temperature"):
                d.pop(name)
        return d


@dataclass(frozen=True)
class FitConfig:
    """The loop of one fine-tuning run (what Keras's `fit` takes, plus checkpoints).

    `checkpoint_dir`: write checkpoints there (weights, optimizer state, loop position);
    one at every epoch end, at an interruption, and every `checkpoint_every_steps` steps
    and/or `checkpoint_every_minutes` minutes (default 10: a killed run loses at most
    that), keeping the newest `keep_checkpoints`. `resume`: continue from the newest one.
    `keep_best`: with validation data, return the best weights by validation (the start
    included). `sample_size`: samples the emitted model is checked on against the training
    graph. `steps_per_epoch`: train on that many batches of the shuffled data per epoch.
    Under an MPI launcher (several ranks) `batch_size` is per rank, as under DDP: a step
    trains `batch_size` x ranks samples (see `qdq_onnx.finetune.data_parallel`)."""

    batch_size: int = 32
    epochs: int = 1
    validation_split: float = 0.0
    shuffle: bool = True
    checkpoint_dir: str | os.PathLike | None = None
    resume: bool = False
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float | None = 10.0
    keep_checkpoints: int = 2
    early_stopping_patience: int | None = None
    keep_best: bool = True
    verbose: int = 1
    sample_size: int = 64
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "keep_checkpoints", "sample_size"):
            if not _count(getattr(self, name)):
                raise SettingError(name, f"must be a positive integer, got "
                                         f"{getattr(self, name)!r}")
        for name in ("steps_per_epoch", "checkpoint_every_steps", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and not _count(value):
                raise SettingError(name, f"must be a positive integer, got {value!r}")
        minutes = self.checkpoint_every_minutes
        if minutes is not None and not (_number(minutes) and minutes > 0):
            raise SettingError("checkpoint_every_minutes", f"must be a positive number, got "
                                                           f"{minutes!r}")
        if not (_number(self.validation_split) and 0.0 <= self.validation_split < 1.0):
            raise SettingError("validation_split", f"must be in [0, 1), got "
                                                   f"{self.validation_split!r}")
        if self.resume and self.checkpoint_dir is None:
            raise SettingError("resume", "needs a checkpoint_dir to resume from")
