"""The Python API of the original toolkit, on ONNX: quantize_model() -> QuantizedModel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from .cases import CustomQDQInsertionCase
from .errors import QdqError
from .insert import InsertReport, insert_qdq
from .model_io import load_model, save_model_atomic
from .plan import PlacementPlan
from .planner import plan_placement
from .prepare import prepare_model, require_float_model
from .rules import RuleSet, load_rules
from .spec import QuantizationSpec


class QuantizedModel:
    """A float ONNX model with its placement plan and the Q/DQ graph built from it."""

    def __init__(self, float_model: onnx.ModelProto, plan: PlacementPlan,
                 qdq_model: onnx.ModelProto, report: InsertReport, notes: list[str]) -> None:
        self.float_model = float_model
        self.plan = plan
        self.onnx = qdq_model
        self.report = report
        self.notes = notes

    def save(self, path: str | os.PathLike) -> Path:
        """Write the Q/DQ ONNX file atomically (checked with the full ONNX checker first)."""
        return save_model_atomic(self.onnx, path, check="the quantized model")

    def summary(self) -> str:
        c = self.plan.counts()
        return (f"{c['activation_qdq_pairs']} activation Q/DQ pairs on {c['activation_inputs']} "
                f"inputs, {c['weights']} weights, {c['left_float']} inputs left float by rule")

    def __repr__(self) -> str:
        return f"QuantizedModel({self.summary()})"


def _as_onnx(model: Any, opset: int) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)):
        p = Path(model)
        if p.suffix == ".onnx":
            return load_model(p)
        from .keras_convert import keras_to_onnx, load_keras_model

        return keras_to_onnx(load_keras_model(p), opset=opset)
    if hasattr(model, "layers") or hasattr(model, "signatures"):
        from .keras_convert import keras_to_onnx

        return keras_to_onnx(model, opset=opset)
    raise QdqError(f"quantize_model takes a Keras model, an onnx.ModelProto or a path, not "
                   f"{type(model).__name__}")


def quantize_model(model: Any, quantization_mode: str = "full",
                   quantization_spec: QuantizationSpec | None = None,
                   custom_qdq_cases: Sequence[CustomQDQInsertionCase | str] | None = None,
                   rules: RuleSet | str | None = None, calibration_data: Any = None,
                   calibration_method: str = "max", calibration_percentile: float = 99.99,
                   calibration_batch_size: int = 32, opset: int = 13,
                   force: bool = False) -> QuantizedModel:
    """Insert Q/DQ following TensorRT's placement policy (or the given rules).

    `model` is a Keras model, an `onnx.ModelProto` or a path (.onnx, .keras, .h5, SavedModel);
    it is never modified, nor is `quantization_spec`. Modes: "full" (every supported layer,
    spec/cases adjust) and "partial" (only what the spec/cases name). With
    `calibration_data` the activation scales are calibrated (max), otherwise placeholders.
    """
    source = _as_onnx(model, opset)
    require_float_model(source, force=force)
    rule_set = rules if isinstance(rules, RuleSet) else load_rules(rules)
    prepared, notes = prepare_model(source)
    plan = plan_placement(prepared, rule_set, quantization_mode, quantization_spec,
                          custom_qdq_cases)
    amax = None
    scale_source = ""
    if calibration_data is not None:
        from .calibration import collect_amax

        amax = collect_amax(prepared, plan, calibration_data,
                            batch_size=calibration_batch_size, method=calibration_method,
                            percentile=calibration_percentile)
        scale_source = f"calibrated:{calibration_method}"
    qdq, report = insert_qdq(prepared, plan, amax, scale_source)
    return QuantizedModel(prepared, plan, qdq, report, notes + plan.notes)


def calibrate(model: Any, data: Any, method: str = "max", percentile: float = 99.99,
              batch_size: int = 32, max_samples: int | None = None,
              show_progress: bool = True) -> onnx.ModelProto:
    """Set the activation scales of a Q/DQ model from data; returns a new model.

    `model` is a Q/DQ `onnx.ModelProto`, a path to one, or a QuantizedModel. Statistics are
    collected on the float graph behind it (Q/DQ bypassed). Weight scales are unchanged.
    """
    import json

    import numpy as np
    from onnx import numpy_helper

    from .calibration import check_method, collect_stats, group_amax
    from .insert import PLAN_KEY, SCALES_KEY, get_metadata, set_metadata
    from .qdq_graph import qdq_pairs, strip_qdq
    from .scales import amax_to_scale

    check_method(method, percentile)
    if isinstance(model, QuantizedModel):
        model = model.onnx
    elif isinstance(model, (str, Path)):
        model = load_model(model)
    pairs = [p for p in qdq_pairs(model) if not p.is_weight]
    if not pairs:
        raise QdqError("the model has no activation Q/DQ pairs to calibrate (run insert "
                       "first)")
    groups: dict[str, list[str]] = {p.source: [p.source] for p in pairs}
    plan_json = get_metadata(model, PLAN_KEY)
    if plan_json:
        plan = PlacementPlan.from_dict(json.loads(plan_json))
        for key, members in plan.activation_groups().items():
            tensors = sorted({m.tensor for m in members})
            if key != tensors[0] or len(tensors) > 1:
                for t in tensors:
                    groups.pop(t, None)
                groups[key] = tensors
    float_model = strip_qdq(model)
    stats = collect_stats(float_model, {p.source for p in pairs}, data,
                          batch_size=batch_size, max_samples=max_samples,
                          with_hist=method != "max", show_progress=show_progress)
    amax = group_amax(stats, groups, method, percentile)
    key_of = {t: key for key, members in groups.items() for t in members}
    scale_of = {p.scale: amax_to_scale(np.float32(amax[key_of[p.source]]))[0]
                for p in pairs}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in scale_of:
            t.CopyFrom(numpy_helper.from_array(scale_of[t.name].reshape(tuple(t.dims)),
                                               t.name))
    set_metadata(out, SCALES_KEY, f"calibrated:{method}")
    return out
