"""The pipeline API: the one façade the command line, the Keras-style API and the scripts
use. One function per stage and per CLI verb, each taking the settings object of its stage
(frozen, validated when made):

    model = pipeline.load("fp32.onnx").model
    q = pipeline.insert(model, PlacementConfig(rules="tensorrt"),
                        CalibrationConfig(method="max"), data="calib.npz")
    pipeline.save(q.qdq, "qdq.onnx", check="the quantized model")
    tuned = pipeline.finetune(q.qdq, x, y, TrainConfig(learning_rate=1e-4),
                              FitConfig(epochs=2, checkpoint_dir="ckpt"))
    report = pipeline.lint(tuned.model)

CLI verb -> function: convert, insert, calibrate, finetune, inspect (and error_report with
data), lint, sensitivity, report, rules. The stage steps inside `insert`: prepare,
plan_placement, measure_ranges, apply_plan. Before a file is written: type_remainder (the
float remainder FP16 by default, with the range guard); `widen` turns a typed file back
into the FP32 working form.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Loaded on first use (PEP 562), so the CLI's
# start-up imports only what its command needs.
_WHERE = {
    "write_text_atomic": "qdq_onnx.files.atomic",
    "ModelFile": "qdq_onnx.files.onnx_files", "check_output": "qdq_onnx.files.onnx_files",
    "BACKENDS": "qdq_onnx.finetune.backend", "register_backend": "qdq_onnx.finetune.backend",
    "require_backend": "qdq_onnx.finetune.backend",
    "backend_description": "qdq_onnx.finetune.backend",
    "Callback": "qdq_onnx.finetune.callbacks", "EpochPrinter": "qdq_onnx.finetune.callbacks",
    "StopAfterSteps": "qdq_onnx.finetune.callbacks",
    "History": "qdq_onnx.finetune.history", "RunState": "qdq_onnx.finetune.state",
    "FitConfig": "qdq_onnx.finetune.config", "TrainConfig": "qdq_onnx.finetune.config",
    "PlacementConfig": "qdq_onnx.placement.config",
    "ResolvedPlacement": "qdq_onnx.placement.config",
    "METHODS": "qdq_onnx.quantize.config", "CalibrationConfig": "qdq_onnx.quantize.config",
    "AccuracyGuardConfig": "qdq_onnx.quantize.accuracy_guard",
    "layer_costs": "qdq_onnx.graph.macs", "quantized_macs_share": "qdq_onnx.graph.macs",
    "data_shapes": "qdq_onnx.graph.macs",
    "default_of": "qdq_onnx.pipeline.config", "make_config": "qdq_onnx.pipeline.config",
    "setting_names": "qdq_onnx.pipeline.config",
    "weight_bits_scheme": "qdq_onnx.pipeline.deprecated",
    **dict.fromkeys(["describe", "error_report", "error_report_chart", "inspect", "lint",
                     "render_error_report", "report", "rules", "sensitivity",
                     "sensitivity_chart", "sensitivity_spec", "write_png"],
                    "qdq_onnx.pipeline.diagnostics"),
    **dict.fromkeys(["Inserted", "apply_plan", "calibrate", "convert", "insert", "load",
                     "measure_ranges", "plan_placement", "prepare", "save", "type_remainder",
                     "widen"], "qdq_onnx.pipeline.stages"),
    "PrecisionConfig": "qdq_onnx.precision.config", "Typed": "qdq_onnx.precision.stage",
    "HIGH_PRECISIONS": "qdq_onnx.graph.float_types",
    **dict.fromkeys(["FineTuned", "Training", "finetune"], "qdq_onnx.pipeline.training"),
    "CustomQDQInsertionCase": "qdq_onnx.placement.cases",
    "PlacementPlan": "qdq_onnx.placement.plan", "RuleSet": "qdq_onnx.placement.rules",
    "QuantizationSpec": "qdq_onnx.placement.spec", "InsertReport": "qdq_onnx.quantize.insert",
    **dict.fromkeys(["SCHEMES", "Scheme", "scheme_named"], "qdq_onnx.scheme"),
    "run_model": "qdq_onnx.pipeline.running",
    **dict.fromkeys(["world", "launched_by_mpi"], "qdq_onnx.parallel.world"),
    **dict.fromkeys(["launch", "record_rank", "finish_rank"], "qdq_onnx.parallel.launch"),
    "runtime_failure": "qdq_onnx.graph.sessions",
}
_DEPRECATED = ("quantize", "recalibrate", "plan", "Placement", "Quantized")

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """The public names, loaded on first use; the old names (`quantize`, `recalibrate`,
    `plan`, `Placement`, `Quantized`) with a DeprecationWarning."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        from qdq_onnx.pipeline import deprecated

        if name in ("Placement", "Quantized"):
            deprecated.warn(name, deprecated.RENAMED[name], stacklevel=2)
            return __getattr__(deprecated.RENAMED[name])
        return getattr(deprecated, name)
    raise AttributeError(f"module 'qdq_onnx.pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
