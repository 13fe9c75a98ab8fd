"""Settings of the pipeline stages as plain dataclasses, validated before any work starts
(a bad method or a missing spec file fails before a model is loaded)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qdq_onnx.errors import QdqError
from qdq_onnx.placement.cases import CustomQDQInsertionCase
from qdq_onnx.placement.rules import RuleSet, load_rules
from qdq_onnx.placement.spec import QuantizationSpec, load_spec_file
from qdq_onnx.quantize.calibration import DEFAULT_CLIP_WARNING, METHODS

MODES = ("full", "partial")


@dataclass(frozen=True)
class Placement:
    """Placement settings resolved to objects: the rule set, mode, spec and cases."""

    rules: RuleSet
    mode: str
    spec: QuantizationSpec | None
    cases: tuple[CustomQDQInsertionCase | str, ...]
    force: bool
    keep_layout: bool = False


@dataclass(frozen=True)
class PlacementConfig:
    """Where Q/DQ goes: `rules` (a RuleSet, a rule-file path or a bundled name; default
    tensorrt), `mode` (full/partial; default: the spec file's mode, else full), `spec` (a
    QuantizationSpec or a YAML spec path), built-in or custom `cases`, `force` (insert
    into a model that already holds Q/DQ), and `keep_layout` (leave the layout Transposes
    a converter put around weighted ops where they are)."""

    rules: RuleSet | str | os.PathLike | None = None
    mode: str | None = None
    spec: QuantizationSpec | str | os.PathLike | None = None
    cases: Sequence[CustomQDQInsertionCase | str] = ()
    force: bool = False
    keep_layout: bool = False

    def resolve(self) -> Placement:
        """Load the rule and spec files and check the mode; QdqError names what is wrong."""
        if self.mode is not None and self.mode not in MODES:
            raise QdqError(f"quantization mode must be 'full' or 'partial', got {self.mode!r}")
        rules = self.rules if isinstance(self.rules, RuleSet) else load_rules(self.rules)
        spec, spec_mode, spec_cases = self.spec, None, []
        if isinstance(spec, (str, os.PathLike, Path)):
            spec, spec_mode, spec_cases = load_spec_file(spec)
        return Placement(rules=rules, mode=self.mode or spec_mode or "full", spec=spec,
                         cases=(*spec_cases, *self.cases), force=self.force,
                         keep_layout=self.keep_layout)


@dataclass(frozen=True)
class CalibrationConfig:
    """How activation ranges are found: `method` (max, percentile, entropy, mse),
    `percentile` (for percentile), `batch_size` per onnxruntime run, `max_samples`, and
    `clip_warning`: the clipping guard warns about tensors whose range clips more than this
    fraction of their calibration values (it never changes a scale)."""

    method: str = "max"
    percentile: float = 99.99
    batch_size: int = 32
    max_samples: int | None = None
    show_progress: bool = True
    clip_warning: float = DEFAULT_CLIP_WARNING  # warn above this clipped fraction

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_warning <= 1.0:
            raise QdqError(f"the clipping warning threshold is a fraction in [0, 1], got "
                           f"{self.clip_warning}")
        if self.method not in METHODS:
            raise QdqError(f"unknown calibration method {self.method!r}; use one of "
                           f"{', '.join(METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise QdqError(f"--percentile must be in (0, 100], got {self.percentile}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise QdqError(f"batch size must be a positive integer, got {self.batch_size}")
        if self.max_samples is not None and self.max_samples <= 0:
            raise QdqError(f"max samples must be a positive integer, got {self.max_samples}")


@dataclass(frozen=True)
class FitConfig:
    """The loop of one fine-tuning run (the `fit` arguments of a Keras model)."""

    batch_size: int = 32
    epochs: int = 1
    validation_split: float = 0.0
    shuffle: bool = True
    checkpoint_dir: str | os.PathLike | None = None
    resume: bool = False
    early_stopping_patience: int | None = None
    verbose: int = 1
    sample_size: int = 64  # samples the emitted model is checked on against training
    steps_per_epoch: int | None = None  # train on part of a huge data set per epoch

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.epochs <= 0 or (
                self.steps_per_epoch is not None and self.steps_per_epoch <= 0):
            raise QdqError("batch_size, epochs and steps_per_epoch must be positive integers")
        if not 0.0 <= self.validation_split < 1.0:
            raise QdqError(f"validation_split must be in [0, 1), got {self.validation_split}")
