"""Calibration settings: a frozen object, validated when it is made, that every calibration
function takes whole."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdq_onnx.errors import SettingError

SINGLE_METHODS = ("max", "percentile", "entropy", "mse")
# auto: per tensor, the single method whose threshold is best at the reading layer's output
# (qdq_onnx.quantize.auto); it needs the model, not only the statistics.
METHODS = (*SINGLE_METHODS, "auto")
DEFAULT_CLIP_WARNING = 0.01
DEFAULT_METHOD = "mse"
# Scale refinement after calibration (`insert` with data; qdq_onnx.quantize.refine_scales):
# auto within the rule file's budget, on whatever the cost, off.
REFINE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class CalibrationConfig:
    """How activation ranges are found.

    `method`: max, percentile, entropy, mse or auto; None (the default): mse for integer
    pairs (measured never far from the best method on the model pools and real pretrained
    models, where max can collapse a model: bench/results/calibration_methods.json) and
    max for FP8 pairs (NVIDIA's FP8 recipes); `resolved` is the name in effect.
    `percentile`: the percentile of |x| that percentile keeps. `batch_size`: samples per
    onnxruntime run, at most; `batch_mib`: fewer when one run's activations would pass
    this many MiB (a high-resolution detector has hundreds of MiB per sample, and the
    statistics do not depend on the batch). `max_samples`: use at
    most this many. `show_progress`: a progress
    bar on a terminal. `clip_warning`: the clipping guard warns about tensors whose range
    clips more than this fraction of their calibration values (it never changes a
    scale). `refine_scales`: after calibration, `insert` tunes the INT8 ranges on the
    model's outputs (the rule file's `scale_refinement`): auto (the default method's
    ranges, within the rule's cost budget), on (any method's, whatever the cost) or off
    (the method's ranges as they are)."""

    method: str | None = None
    percentile: float = 99.99
    batch_size: int = 32
    batch_mib: int = 512
    max_samples: int | None = None
    show_progress: bool = True
    clip_warning: float = DEFAULT_CLIP_WARNING
    refine_scales: str = "auto"

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise SettingError("method", f"must be one of {', '.join(METHODS)}, got "
                                         f"{self.method!r}")
        if not (isinstance(self.percentile, (int, float)) and 0.0 < self.percentile <= 100.0):
            raise SettingError("percentile", f"must be in (0, 100], got {self.percentile}")
        if not _positive_int(self.batch_size):
            raise SettingError("batch_size", f"must be a positive integer, got "
                                             f"{self.batch_size!r}")
        if not _positive_int(self.batch_mib):
            raise SettingError("batch_mib", f"must be a positive integer, got "
                                            f"{self.batch_mib!r}")
        if self.max_samples is not None and not _positive_int(self.max_samples):
            raise SettingError("max_samples", f"must be a positive integer, got "
                                              f"{self.max_samples!r}")
        if not (isinstance(self.clip_warning, (int, float)) and math.isfinite(self.clip_warning)
                and 0.0 <= self.clip_warning <= 1.0):
            raise SettingError("clip_warning", f"must be a fraction in [0, 1], got "
                                               f"{self.clip_warning}")
        if self.refine_scales not in REFINE_MODES:
            raise SettingError("refine_scales", f"must be one of {', '.join(REFINE_MODES)}, "
                                                f"got {self.refine_scales!r}")


    @property
    def resolved(self) -> str:
        """The method in effect for integer pairs: the one given, else the default."""
        return self.method or DEFAULT_METHOD

    def method_for(self, is_float: bool) -> str:
        """The method for pairs of a float (FP8) or integer scheme: a method searching an
        integer grid (entropy, mse) becomes max for FP8 only when it is the default."""
        if is_float and self.method is None:
            return "max"
        return self.resolved


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
