"""The diagnostics' settings objects, validated when made like the stages' (a SettingError
names the setting; the CLI names its flag)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdq_onnx.errors import SettingError


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


REPORT_SAMPLES = 512  # the HTML report's error-report pass reads at most this many


@dataclass(frozen=True)
class ReportConfig:
    """The error report's data pass (`inspect --data`, `report --data`): `batch_size`
    samples per run, at most `max_samples` samples (None: all), a progress bar when
    `show_progress`."""

    batch_size: int = 32
    max_samples: int | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        limits = {"batch_size": self.batch_size, "max_samples": self.max_samples}
        for name, value in limits.items():
            if not (_positive_int(value) or (name == "max_samples" and value is None)):
                raise SettingError(name, f"must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SensitivityConfig:
    """`max_samples`: evaluate on at most this many samples. `target_drop`: the largest
    acceptable accuracy drop in points (0.2 = 0.2 percentage points; None: rank only, no
    spec). `calibration_samples`: calibration samples for the layers' scales. `batch_size`:
    evaluation batch."""

    max_samples: int = 2000
    target_drop: float | None = None
    calibration_samples: int = 512
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("max_samples", "calibration_samples", "batch_size"):
            if not _positive_int(getattr(self, name)):
                raise SettingError(name, f"must be a positive integer, got "
                                         f"{getattr(self, name)!r}")
        t = self.target_drop
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                              or not math.isfinite(t) or not 0.0 <= t < 100.0):
            raise SettingError("target_drop", f"must be in [0, 100) accuracy points, got {t}")
