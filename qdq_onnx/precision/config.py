"""Settings of the float remainder's typing: a frozen object, validated when made."""

from __future__ import annotations

from dataclasses import dataclass

from qdq_onnx.errors import SettingError
from qdq_onnx.types.float_type import HIGH_PRECISIONS

# At most this many samples of the data feed the range guard's one pass (ranges of the
# float remainder, not scales: a subset shows an op's magnitude).
RANGE_GUARD_SAMPLES = 1024


@dataclass(frozen=True)
class PrecisionConfig:
    """How the float remainder is typed.

    `high_precision`: fp16, bf16 or fp32 (None: the rule file's default, fp16 for the
    bundled rules). `keep_io_types`: graph inputs and outputs keep FP32 (a Cast at the
    boundary) rather than taking the remainder's type. `range_guard`: keep FP32 the ops the
    rule file's guards name (from data where given, and from the weights)."""

    high_precision: str | None = None
    keep_io_types: bool = True
    range_guard: bool = True

    def __post_init__(self) -> None:
        if self.high_precision is not None and self.high_precision not in HIGH_PRECISIONS:
            raise SettingError("high_precision", f"must be one of {', '.join(HIGH_PRECISIONS)},"
                                                 f" got {self.high_precision!r}")
        for name in ("keep_io_types", "range_guard"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(name, f"must be true or false, got "
                                         f"{getattr(self, name)!r}")
