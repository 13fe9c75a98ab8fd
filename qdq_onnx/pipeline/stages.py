"""The pipeline's model stages as functions over plain objects: load, convert, plan, apply
the plan, the two the CLI names, `insert` (prepare -> plan -> calibrate -> guard -> insert)
and `calibrate` (new activation scales for a Q/DQ model), and the last step of every
command that writes, `write` (type the remainder, save). Each takes the settings object of
its stage."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from qdq_onnx.convert.prepare import prepare_model, require_float_model
from qdq_onnx.files.onnx_files import ModelFile, load_model_file, save_model_atomic
from qdq_onnx.parallel.context import RunContext
from qdq_onnx.placement.config import PlacementConfig, ResolvedPlacement
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.placement.planner import check_plan_matches
from qdq_onnx.placement.planner import plan_placement as _plan_placement
from qdq_onnx.precision.config import PrecisionConfig
from qdq_onnx.precision.record import recorded_remainder
from qdq_onnx.precision.stage import Typed, type_model
from qdq_onnx.precision.widen import widen
from qdq_onnx.quantize.accuracy_guard import AccuracyGuardConfig, GuardResult, guard_plan
from qdq_onnx.quantize.calibration import CalibrationResult, calibrate_plan
from qdq_onnx.quantize.config import CalibrationConfig
from qdq_onnx.quantize.insert import InsertReport, insert_qdq
from qdq_onnx.quantize.recalibrate import recalibrate as _recalibrate
from qdq_onnx.quantize.refine_scales import refine_plan

log = logging.getLogger("qdq_onnx.pipeline")


def _step(what: str, started: float) -> float:
    """Log one stage step and its time (shown by `qdq-onnx -v`); the time now."""
    now = time.perf_counter()
    log.info("%s (%.2f s)", what, now - started)
    return now


# -- files ---------------------------------------------------------------------------------
def load(path: str | os.PathLike) -> ModelFile:
    """Read an ONNX file (`.model`, `.path`, `.external`); bad files raise QdqError."""
    return load_model_file(path)


def save(model: onnx.ModelProto, path: str | os.PathLike, check: str = "the model",
         like: ModelFile | None = None) -> Path:
    """Write `model` atomically after the full ONNX checker; with external data when it is
    over 2 GB or when `like` (the input it was made from) had external data. In a
    data-parallel run (several MPI ranks) only rank 0 writes: the others hold the same
    model and return the path unwritten."""
    from qdq_onnx.parallel import world

    if not world().is_root:
        return Path(path)
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


# -- placement, calibration, insertion -----------------------------------------------------
def _resolved(placement: PlacementConfig | ResolvedPlacement | None) -> ResolvedPlacement:
    if isinstance(placement, ResolvedPlacement):
        return placement
    return (placement or PlacementConfig()).resolve()


def plan_placement(model: onnx.ModelProto,
                   placement: PlacementConfig | ResolvedPlacement | None = None
                   ) -> PlacementPlan:
    """Decide every Q/DQ pair of a prepared float model and its precision scheme (pure:
    nothing is written)."""
    return _plan_placement(model, _resolved(placement))


def apply_plan(model: onnx.ModelProto, plan: PlacementPlan,
               amax: dict[str, float] | None = None, scale_source: str = "",
               in_place: bool = False) -> tuple[onnx.ModelProto, InsertReport]:
    """The Q/DQ model: the plan's pairs with calibrated (or placeholder) scales."""
    return insert_qdq(model, plan, amax, scale_source, in_place=in_place)


@dataclass
class Inserted:
    """What `insert` made: the prepared float model, the plan, the Q/DQ model, the
    insertion report, notes on what was changed, and the calibration result (ranges and
    clipping guard; None without data)."""

    float_model: onnx.ModelProto
    plan: PlacementPlan
    qdq: onnx.ModelProto
    report: InsertReport
    notes: list[str]
    calibration: CalibrationResult | None
    guard: GuardResult | None = None


def insert(model: onnx.ModelProto | str | os.PathLike | ModelFile,
           placement: PlacementConfig | None = None,
           calibration: CalibrationConfig | None = None, data: Any = None,
           use_plan: PlacementPlan | str | os.PathLike | None = None, copy: bool = True,
           guard: AccuracyGuardConfig | None = None) -> Inserted:
    """What `qdq-onnx insert` does: prepare -> plan (or a saved plan) -> calibrate (when
    `data` is given) -> scale refinement and accuracy guard (with data, when the rule file
    has them and `calibration.refine_scales` / `guard` do not turn them off; never on a
    saved plan) -> insert
    Q/DQ. `model` (a ModelProto, or a path or ModelFile to read) is not modified unless
    `copy=False` (callers that own it save a copy)."""
    if isinstance(model, (str, os.PathLike)):
        model, copy = load(model).model, False  # read here: nobody else holds it
    elif isinstance(model, ModelFile):
        model = model.model
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"pipeline.insert takes an onnx.ModelProto or the path of an .onnx "
                        f"file, got {type(model).__name__}")
    if isinstance(placement, PlacementPlan):
        raise TypeError("pipeline.insert(model, plan, amax) was the old form of "
                        "pipeline.apply_plan(model, plan, amax); insert takes a "
                        "PlacementConfig")
    resolved, t = _resolved(placement), time.perf_counter()
    # Without data, insertion checks the weights for NaN/Inf as it reads them for their
    # scales (one read of each weight fewer); calibration needs them checked before it.
    prepared, made, notes = _prepare_and_plan(model, resolved, copy, use_plan,
                                              check_weights=data is not None)
    t = _step(f"prepared and planned: {len(made.placements)} placements", t)
    result, source, guarded = None, "", None
    if data is not None:
        c = calibration or CalibrationConfig()
        # Scale refinement (inside calibration, before its clipping guard) runs only on a
        # plan made here, as the accuracy guard does.
        def refine(amax: dict[str, float], plan: PlacementPlan = made) -> tuple[Any, str | None]:
            return refine_plan(prepared, plan, amax, data, c, resolved.rules)

        result = calibrate_plan(prepared, made, data, c, RunContext.of_process(),
                                refine=refine if use_plan is None else None)
        source = f"calibrated:{result.method}"
        if result.refinement is not None:
            made = replace(made, scale_refinement=result.refinement.record())
            source += "+refined" if result.refinement.factors else ""
        t = _step(f"calibrated {len(result.amax)} scale keys ({result.method})", t)
        if use_plan is None:
            # The guard judges the refined ranges, the ones that will be written.
            guarded, note = guard_plan(prepared, made, result.amax, data, c, resolved.rules,
                                       guard or AccuracyGuardConfig())
            made = guarded.plan if guarded else made
            notes += [note] if note else []
            t = _step("accuracy guard", t)
    # Insertion copies the prepared model only when the caller still needs it unchanged.
    qdq, report = insert_qdq(prepared, made, result.amax if result else None, source,
                             in_place=not copy, check_weights=data is None)
    _step(f"inserted {report.activation_pairs} activation pairs", t)
    return Inserted(prepared, made, qdq, report, notes + made.notes, result, guarded)


def _prepare_and_plan(model: onnx.ModelProto,
                      placement: PlacementConfig | ResolvedPlacement | None, copy: bool,
                      use_plan: PlacementPlan | str | os.PathLike | None = None,
                      check_weights: bool = True
                      ) -> tuple[onnx.ModelProto, PlacementPlan, list[str]]:
    p = _resolved(placement)
    require_float_model(model, force=p.force)
    prepared, notes = prepare_model(model, copy=copy, layout=not p.keep_layout,
                                    check_weights=check_weights)
    if use_plan is not None:
        made = use_plan if isinstance(use_plan, PlacementPlan) else PlacementPlan.load(use_plan)
        check_plan_matches(made, prepared)
    else:
        made = _plan_placement(prepared, p)
    return prepared, made, notes


def calibrate(qdq_model: onnx.ModelProto, data: Any,
              calibration: CalibrationConfig | None = None
              ) -> tuple[onnx.ModelProto, CalibrationResult]:
    """What `qdq-onnx calibrate` does: new activation scales for a Q/DQ model, from the
    float graph behind it; returns the model and the calibration result (ranges, clipping
    guard)."""
    if isinstance(data, PlacementPlan):
        raise TypeError("pipeline.calibrate(model, plan, data) was the old form of "
                        "qdq_onnx.quantize.calibration.calibrate_plan; calibrate takes a "
                        "Q/DQ model and data")
    return _recalibrate(widen(qdq_model), data, calibration, RunContext.of_process())


def type_remainder(qdq_model: onnx.ModelProto, precision: PrecisionConfig | None = None,
                   data: Any = None, calibration: CalibrationConfig | None = None,
                   like: onnx.ModelProto | None = None, copy: bool = True) -> Typed:
    """The last step before a file is written for TensorRT: the float remainder typed
    FP16 (default), BF16 or FP32, with the range guard's FP32 islands (from `data`, read in
    `calibration`'s batches, and from the weights) recorded in the embedded plan.
    `like`: the typed file `qdq_model` was made from (fine-tuned, recalibrated); unless
    `precision` names a type, the remainder keeps the type its plan records (the rule
    file's default where it records none). `.model` is the typed model, `.lines()` what
    was done. `qdq_model` is not modified unless `copy=False` (callers that do not need it
    after: no weight is copied)."""
    precision = precision or PrecisionConfig()
    recorded = recorded_remainder(like) if like is not None else None
    if precision.high_precision is None and recorded is not None:
        precision = replace(precision, high_precision=recorded)
    return type_model(qdq_model, precision, data, calibration, run=RunContext.of_process(),
                      copy=copy)


def write(model: onnx.ModelProto, path: str | os.PathLike,
          precision: PrecisionConfig | None = None, data: Any = None,
          calibration: CalibrationConfig | None = None, like: ModelFile | None = None,
          check: str = "the model", copy: bool = True) -> Typed:
    """The last step of every command that writes a Q/DQ file: type the float remainder
    (`type_remainder`; `like`, the file it was made from, decides the recorded type and
    external data) and save it atomically (`save`, rank 0 only). Returns the typing, whose
    `.lines()` are the notes to show. `model` is not modified unless `copy=False`."""
    t = time.perf_counter()
    typed = type_remainder(model, precision, data, calibration,
                           like=like.model if like is not None else None, copy=copy)
    t = _step("typed the float remainder", t)
    save(typed.model, path, check=check, like=like)
    _step(f"saved {path}", t)
    return typed
