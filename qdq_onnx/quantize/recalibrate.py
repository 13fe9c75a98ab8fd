"""Recalibration: new activation scales for an existing Q/DQ model (ours or another tool's),
from statistics collected on the float graph behind it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.files.metadata import PLAN_KEY, SCALES_KEY, get_metadata, set_metadata
from qdq_onnx.graph.qdq import QdqPair, qdq_pairs, strip_qdq
from qdq_onnx.graph.weights import require_finite_weights
from qdq_onnx.parallel.context import RunContext
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.quantize.calibration import CalibrationResult, calibrate_groups
from qdq_onnx.quantize.config import CalibrationConfig
from qdq_onnx.quantize.scales import amax_to_scale
from qdq_onnx.quantize.schemes import pair_schemes


def scale_groups(model: onnx.ModelProto, pairs: list[QdqPair]) -> dict[str, list[str]]:
    """Activation tensors by the scale they share: the placement plan's groups when the
    model carries one (Concat shared mode), else one group per tensor."""
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
    return groups


def recalibrate(model: onnx.ModelProto, data: Any, config: CalibrationConfig | None = None,
                run: RunContext | None = None) -> tuple[onnx.ModelProto, CalibrationResult]:
    """A copy of the Q/DQ `model` with activation scales from `data` (weights unchanged),
    each in its pair's scheme, and the calibration result (ranges, clipping guard); `run`:
    the ranks that share the data (default one process)."""
    config = config or CalibrationConfig()
    require_finite_weights(model)
    pairs = [p for p in qdq_pairs(model) if not p.is_weight]
    if not pairs:
        raise QdqError("the model has no activation Q/DQ pairs to calibrate (run insert "
                       "first)")
    groups = scale_groups(model, pairs)
    key_of = {t: key for key, members in groups.items() for t in members}
    scheme_of = pair_schemes(model, pairs)
    schemes = {key_of[p.source]: scheme_of[p.source] for p in pairs}
    result = calibrate_groups(strip_qdq(model), groups, data, config, schemes, run)
    scale_of = {p.scale: amax_to_scale(np.float32(result.amax[key_of[p.source]]),
                                       scheme_of[p.source])[0]
                for p in pairs}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in scale_of:
            t.CopyFrom(numpy_helper.from_array(scale_of[t.name].reshape(tuple(t.dims)),
                                               t.name))
    set_metadata(out, SCALES_KEY, f"calibrated:{result.method}")
    return out, result
