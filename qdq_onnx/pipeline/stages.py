"""The pipeline as stage functions over plain objects: convert -> prepare -> plan ->
calibrate -> insert -> fine-tune -> emit, with lint, error report, sensitivity and the HTML
report beside them. The CLI, the Keras-style API, the scripts and the tests all call these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from qdq_onnx.convert.prepare import prepare_model, require_float_model
from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import ModelFile, load_model_file, save_model_atomic
from qdq_onnx.finetune import History, TrainConfig, Trainer
from qdq_onnx.pipeline.config import CalibrationConfig, FitConfig, PlacementConfig
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.placement.planner import check_plan_matches, plan_placement
from qdq_onnx.placement.rules import RuleSet, load_rules
from qdq_onnx.quantize.calibration import CalibrationResult, calibrate_plan
from qdq_onnx.quantize.insert import InsertReport, insert_qdq
from qdq_onnx.quantize.recalibrate import recalibrate as _recalibrate


# -- files ---------------------------------------------------------------------------------
def load(path: str | os.PathLike) -> ModelFile:
    """Read an ONNX file (`.model`, `.path`, `.external`); bad files raise QdqError."""
    return load_model_file(path)


def save(model: onnx.ModelProto, path: str | os.PathLike, check: str = "the model",
         like: ModelFile | None = None) -> Path:
    """Write `model` atomically after the full ONNX checker; with external data when it is
    over 2 GB or when `like` (the input it was made from) had external data."""
    return save_model_atomic(model, path, check=check,
                             external=True if like is not None and like.external else None)


# -- conversion and preparation ------------------------------------------------------------
def convert(model: Any, opset: int | None = None, input_shape: Any = None) -> onnx.ModelProto:
    """A Keras model (in memory, or a .keras/.h5/SavedModel path) as prepared float ONNX
    with its Keras layer map; `opset` None: 13, or 17 when the model has LayerNormalization
    (kept one op). The only stage that imports TensorFlow."""
    from qdq_onnx.convert.keras_model import keras_to_onnx, load_keras_model

    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    return keras_to_onnx(model, opset=opset, input_shape=input_shape)


def prepare(model: onnx.ModelProto, copy: bool = True, layout: bool = True
            ) -> tuple[onnx.ModelProto, list[str]]:
    """Normalise a float model (opset, names, layout Transposes, weights, BatchNorm
    folding); (model, notes)."""
    return prepare_model(model, copy=copy, layout=layout)


# -- placement, calibration, insertion -----------------------------------------------------
def plan(model: onnx.ModelProto, placement: PlacementConfig | None = None) -> PlacementPlan:
    """Decide every Q/DQ pair of a prepared float model (pure: nothing is written)."""
    p = (placement or PlacementConfig()).resolve()
    return plan_placement(model, p.rules, p.mode, p.spec, p.cases)


def calibrate(model: onnx.ModelProto, plan: PlacementPlan, data: Any,
              calibration: CalibrationConfig | None = None) -> CalibrationResult:
    """Calibrated max |x| per scale key of `plan` on a prepared float model (`.amax`), with
    the clipping guard's measurements and warnings."""
    c = calibration or CalibrationConfig()
    return calibrate_plan(model, plan, data, batch_size=c.batch_size,
                          max_samples=c.max_samples, method=c.method, percentile=c.percentile,
                          show_progress=c.show_progress, clip_warning=c.clip_warning)


def insert(model: onnx.ModelProto, plan: PlacementPlan, amax: dict[str, float] | None = None,
           scale_source: str = "", weight_bits: int = 8, in_place: bool = False
           ) -> tuple[onnx.ModelProto, InsertReport]:
    """The Q/DQ model: the plan's pairs with calibrated (or placeholder) scales."""
    return insert_qdq(model, plan, amax, scale_source, in_place=in_place,
                      weight_bits=weight_bits)


@dataclass
class Quantized:
    """What `quantize` made: the prepared float model, the plan, the Q/DQ model, the
    insertion report, notes on what was changed, and the calibration result (ranges and
    clipping guard; None without data)."""

    float_model: onnx.ModelProto
    plan: PlacementPlan
    qdq: onnx.ModelProto
    report: InsertReport
    notes: list[str]
    calibration: CalibrationResult | None


def quantize(model: onnx.ModelProto, placement: PlacementConfig | None = None,
             calibration: CalibrationConfig | None = None, data: Any = None,
             use_plan: PlacementPlan | str | os.PathLike | None = None, weight_bits: int = 8,
             copy: bool = True) -> Quantized:
    """prepare -> plan (or a saved plan) -> calibrate (when `data` is given) -> insert.

    `model` is not modified unless `copy=False` (callers that own it save a copy)."""
    if not 2 <= weight_bits <= 8:
        raise QdqError(f"weight_bits must be 2-8, got {weight_bits}")
    prepared, made, notes = _prepare_and_plan(model, placement, copy, use_plan)
    result, source = None, ""
    if data is not None:
        c = calibration or CalibrationConfig()
        result, source = calibrate(prepared, made, data, c), f"calibrated:{c.method}"
    # Insertion copies the prepared model only when the caller still needs it unchanged.
    qdq, report = insert_qdq(prepared, made, result.amax if result else None, source,
                             in_place=not copy, weight_bits=weight_bits)
    return Quantized(prepared, made, qdq, report, notes + made.notes, result)


def _prepare_and_plan(model: onnx.ModelProto, placement: PlacementConfig | None, copy: bool,
                      use_plan: PlacementPlan | str | os.PathLike | None = None
                      ) -> tuple[onnx.ModelProto, PlacementPlan, list[str]]:
    p = (placement or PlacementConfig()).resolve()
    require_float_model(model, force=p.force)
    prepared, notes = prepare_model(model, copy=copy, layout=not p.keep_layout)
    if use_plan is not None:
        made = use_plan if isinstance(use_plan, PlacementPlan) else PlacementPlan.load(use_plan)
        check_plan_matches(made, prepared)
    else:
        made = plan_placement(prepared, p.rules, p.mode, p.spec, p.cases)
    return prepared, made, notes


def recalibrate(qdq_model: onnx.ModelProto, data: Any,
                calibration: CalibrationConfig | None = None
                ) -> tuple[onnx.ModelProto, CalibrationResult]:
    """New activation scales for a Q/DQ model, from the float graph behind it; returns the
    model and the calibration result (ranges, clipping guard)."""
    c = calibration or CalibrationConfig()
    return _recalibrate(qdq_model, data, c.method, c.percentile, c.batch_size, c.max_samples,
                        c.show_progress, c.clip_warning)


# -- fine-tuning and emit ------------------------------------------------------------------
@dataclass
class FineTuned:
    """The emitted Q/DQ model (checked against the training graph) and the History."""

    model: onnx.ModelProto
    history: History


def finetune(qdq_model: onnx.ModelProto, x: Any, y: Any = None,
             config: TrainConfig | None = None,
             fit: FitConfig | None = None, validation_data: tuple | None = None,
             on_epoch_end: Any = None, provenance: dict | None = None) -> FineTuned:
    """Quantization-aware fine-tuning of a Q/DQ model, then emit (even after Ctrl-C: the
    History says `interrupted` and the model holds the weights reached). `x` with `y` None
    may be an iterable of (x, y) batches."""
    f = fit or FitConfig()
    trainer = Trainer(qdq_model, config or TrainConfig())
    try:
        history = trainer.fit(x, y, batch_size=f.batch_size, epochs=f.epochs,
                              validation_split=f.validation_split,
                              validation_data=validation_data, shuffle=f.shuffle,
                              checkpoint_dir=f.checkpoint_dir, resume=f.resume,
                              early_stopping_patience=f.early_stopping_patience,
                              verbose=f.verbose, on_epoch_end=on_epoch_end,
                              steps_per_epoch=f.steps_per_epoch)
        return FineTuned(trainer.emit(trainer.sample(f.sample_size), provenance=provenance),
                         history)
    finally:
        trainer.close()


# -- diagnostics ---------------------------------------------------------------------------
def lint(model: onnx.ModelProto, rules: RuleSet | str | os.PathLike | None = None):
    """TensorRT INT8 and fusion check of any Q/DQ model (a LintReport)."""
    from qdq_onnx.diagnostics.lint import lint_model

    return lint_model(model, rules if isinstance(rules, RuleSet) else load_rules(rules))


def error_report(model: onnx.ModelProto, data: Any, batch_size: int = 32,
                 max_samples: int | None = None, show_progress: bool = True) -> dict:
    """Per quantized tensor scale, clipping and SQNR; per weighted layer float-vs-Q/DQ."""
    from qdq_onnx.diagnostics.error_report import build_report

    return build_report(model, data, batch_size=batch_size, max_samples=max_samples,
                        show_progress=show_progress)


def sensitivity(model: onnx.ModelProto, x: dict[str, np.ndarray], labels: np.ndarray | None,
                placement: PlacementConfig | None = None, calibration_data: Any = None,
                target_drop: float | None = None, weight_bits: int = 8,
                calibration_samples: int = 512):
    """Per-layer sensitivity of a float model on `x` (accuracy with `labels`, output SQNR
    without) and, with `target_drop` (a fraction), the layers to leave float."""
    from qdq_onnx.diagnostics.sensitivity import analyse

    prepared, made, _ = _prepare_and_plan(model, placement, copy=True)
    c = CalibrationConfig(max_samples=calibration_samples, show_progress=False)
    amax = calibrate(prepared, made, calibration_data if calibration_data is not None else x,
                     c).amax
    return analyse(prepared, made, amax, x, labels, target_drop=target_drop,
                   weight_bits=weight_bits)


def report(model: onnx.ModelProto, name: str, rules: RuleSet | str | None = None,
           data: Any = None, max_samples: int = 512, sensitivity: dict | None = None,
           bench_dir: str | os.PathLike | None = None) -> str:
    """One self-contained HTML report of a Q/DQ model."""
    from qdq_onnx.diagnostics.html_report import build_html, load_bench

    quant = error_report(model, data, max_samples=max_samples) if data is not None else None
    bench = load_bench(bench_dir) if bench_dir else None
    return build_html(model, name, lint(model, rules), quant, sensitivity, bench)
