"""The pipeline API: one function per stage, each taking and returning plain objects
(ModelProto, PlacementPlan, config dataclasses validated before any work).

    model = pipeline.load("fp32.onnx").model
    q = pipeline.quantize(model, PlacementConfig(rules="tensorrt"),
                          CalibrationConfig(method="max"), data="calib.npz")
    pipeline.save(q.qdq, "qdq.onnx", check="the quantized model")
    tuned = pipeline.finetune(q.qdq, x, y, TrainConfig(learning_rate=1e-4))
    report = pipeline.lint(tuned.model)
"""

from qdq_onnx.pipeline.config import (
    CalibrationConfig,
    FitConfig,
    Placement,
    PlacementConfig,
)
from qdq_onnx.pipeline.stages import (
    FineTuned,
    Quantized,
    calibrate,
    convert,
    error_report,
    finetune,
    insert,
    lint,
    load,
    plan,
    prepare,
    quantize,
    recalibrate,
    report,
    save,
    sensitivity,
)

__all__ = ["CalibrationConfig", "FineTuned", "FitConfig", "Placement", "PlacementConfig",
           "Quantized", "calibrate", "convert", "error_report", "finetune", "insert", "lint",
           "load", "plan", "prepare", "quantize", "recalibrate", "report", "save",
           "sensitivity"]
