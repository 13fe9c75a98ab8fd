"""The pipeline API: one function per stage and per CLI verb, each taking the settings
object of its stage (frozen, validated when made), and the results they return:

    model = pipeline.load("fp32.onnx").model
    q = pipeline.insert(model, PlacementConfig(rules="tensorrt"),
                        CalibrationConfig(method="mse"), data="calib.npz")
    pipeline.write(q.qdq, "qdq.onnx", data="calib.npz")   # FP16 remainder, range guard
    tuned = pipeline.finetune(q.qdq, x, y, TrainConfig(learning_rate=1e-4),
                              FitConfig(epochs=2, checkpoint_dir="ckpt"))
    report = pipeline.lint(tuned.model)

CLI verb -> function: convert, insert, calibrate, finetune, inspect (and error_report with
data), lint, sensitivity, report, rules. `insert` is prepare -> `plan_placement` ->
calibration -> `apply_plan`; `write` types the float remainder (`type_remainder`) and
saves (`save`). The steps behind them are public in their stage modules
(`qdq_onnx.convert.prepare.prepare_model`, `qdq_onnx.quantize.calibration.calibrate_plan`,
`qdq_onnx.precision.widen.widen`); the names the front ends share are in
`qdq_onnx.pipeline.plumbing`; the old names are aliases (`qdq_onnx.pipeline.deprecated`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Loaded on first use (PEP 562), so the CLI's
# start-up imports only what its command needs.
_WHERE = {
    **dict.fromkeys(["convert", "load", "save", "write", "insert", "calibrate",
                     "plan_placement", "apply_plan", "type_remainder", "Inserted"],
                    "qdq_onnx.pipeline.stages"),
    **dict.fromkeys(["finetune", "FineTuned"], "qdq_onnx.pipeline.training"),
    **dict.fromkeys(["inspect", "error_report", "lint", "sensitivity", "report", "rules"],
                    "qdq_onnx.pipeline.diagnostics"),
    "PlacementConfig": "qdq_onnx.placement.config",
    "CalibrationConfig": "qdq_onnx.quantize.config",
    "AccuracyGuardConfig": "qdq_onnx.quantize.accuracy_guard",
    "PrecisionConfig": "qdq_onnx.precision.config",
    "TrainConfig": "qdq_onnx.finetune.config", "FitConfig": "qdq_onnx.finetune.config",
    "Typed": "qdq_onnx.precision.stage",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """The public names, loaded on first use; an old name with a DeprecationWarning that
    says where it lives now and when the alias goes."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    deprecated = importlib.import_module("qdq_onnx.pipeline.deprecated")
    if name in deprecated.ALIASES:
        return deprecated.resolve(name, stacklevel=3)
    raise AttributeError(f"module 'qdq_onnx.pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
