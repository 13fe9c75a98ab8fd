"""The remainder's type and FP32 islands, written into the plan a Q/DQ file carries."""

from __future__ import annotations

import json

import onnx

from qdq_onnx.files.metadata import PLAN_KEY, get_metadata, set_metadata
from qdq_onnx.placement.plan import KeptFP32, PlacementPlan


def record_remainder(model: onnx.ModelProto, high_precision: str,
                     kept: list[KeptFP32]) -> PlacementPlan | None:
    """Set the embedded plan's `high_precision` and `kept_fp32`; the updated plan, or None
    for a file without one (another tool's)."""
    text = get_metadata(model, PLAN_KEY)
    if not text:
        return None
    plan = PlacementPlan.from_dict(json.loads(text))
    plan.high_precision, plan.kept_fp32 = high_precision, list(kept)
    set_metadata(model, PLAN_KEY, plan.to_json())
    return plan
