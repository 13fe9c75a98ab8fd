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
plan_placement, measure_ranges, apply_plan.
"""

from typing import Any

from qdq_onnx.files.atomic import write_text_atomic
from qdq_onnx.files.onnx_files import ModelFile, check_output
from qdq_onnx.finetune.backend import BACKENDS, register_backend, require_backend
from qdq_onnx.finetune.callbacks import Callback, EpochPrinter, StopAfterSteps
from qdq_onnx.finetune.history import History
from qdq_onnx.finetune.state import RunState
from qdq_onnx.pipeline.config import (
    METHODS,
    CalibrationConfig,
    FitConfig,
    PlacementConfig,
    ResolvedPlacement,
    TrainConfig,
    default_of,
    make_config,
    setting_names,
)
from qdq_onnx.pipeline.deprecated import weight_scheme_of as weight_bits_scheme
from qdq_onnx.pipeline.diagnostics import (
    describe,
    error_report,
    error_report_chart,
    inspect,
    lint,
    render_error_report,
    report,
    rules,
    sensitivity,
    sensitivity_chart,
    sensitivity_spec,
    write_png,
)
from qdq_onnx.pipeline.stages import (
    Inserted,
    apply_plan,
    calibrate,
    convert,
    insert,
    load,
    measure_ranges,
    plan_placement,
    prepare,
    save,
)
from qdq_onnx.pipeline.training import FineTuned, Training, finetune
from qdq_onnx.placement.cases import CustomQDQInsertionCase
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.placement.spec import QuantizationSpec
from qdq_onnx.quantize.insert import InsertReport
from qdq_onnx.scheme import SCHEMES, Scheme, scheme_named

__all__ = [
    "BACKENDS", "METHODS", "SCHEMES", "CalibrationConfig", "Callback", "CustomQDQInsertionCase",
    "EpochPrinter", "FineTuned", "FitConfig", "History", "InsertReport", "Inserted",
    "ModelFile", "PlacementConfig", "PlacementPlan", "QuantizationSpec", "ResolvedPlacement",
    "RuleSet", "RunState", "Scheme", "StopAfterSteps", "TrainConfig", "Training",
    "apply_plan", "calibrate", "check_output", "convert", "default_of", "describe",
    "error_report", "error_report_chart", "finetune", "insert", "inspect", "lint", "load",
    "make_config", "measure_ranges", "plan_placement", "prepare", "register_backend",
    "render_error_report", "report", "require_backend", "rules", "run_model", "save",
    "scheme_named", "sensitivity", "sensitivity_chart", "sensitivity_spec", "setting_names",
    "weight_bits_scheme", "write_png", "write_text_atomic"]


def run_model(model: Any, x: Any) -> Any:
    """The first output of `model` run in onnxruntime on `x` (an array, or a dict by input
    name), inputs matched and checked as every data-taking command does."""
    from qdq_onnx.data.feeds import match_inputs
    from qdq_onnx.graph.sessions import inference_session

    feeds = match_inputs({"": x} if not isinstance(x, dict) else dict(x), model)
    return inference_session(model).run(None, feeds)[0]


def __getattr__(name: str) -> Any:
    """The old names (`quantize`, `recalibrate`, `plan`, `Placement`, `Quantized`), with a
    DeprecationWarning."""
    from qdq_onnx.pipeline import deprecated

    if name in ("quantize", "recalibrate", "plan"):
        return getattr(deprecated, name)
    if name in ("Placement", "Quantized"):
        deprecated.warn(name, deprecated.RENAMED[name], stacklevel=2)
        return ResolvedPlacement if name == "Placement" else Inserted
    raise AttributeError(f"module 'qdq_onnx.pipeline' has no attribute {name!r}")
