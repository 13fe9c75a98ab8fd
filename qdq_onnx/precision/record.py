"""The remainder's type and FP32 islands, written into the plan a Q/DQ file carries."""

from __future__ import annotations

import json

import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.files.metadata import PLAN_KEY, get_metadata, set_metadata
from qdq_onnx.placement.plan import KeptFP32, PlacementPlan
from qdq_onnx.types.float_type import HIGH_PRECISIONS


def record_remainder(model: onnx.ModelProto, high_precision: str,
                     kept: list[KeptFP32]) -> PlacementPlan | None:
    """Set the embedded plan's `high_precision` and `kept_fp32`; the updated plan, or None
    for a file without one (another tool's)."""
    text = get_metadata(model, PLAN_KEY)
    if not text:
        return None
    plan = PlacementPlan.from_dict(json.loads(text))
    plan.high_precision, plan.kept_fp32 = high_precision, list(kept)
    plan.remainder_recorded = True
    set_metadata(model, PLAN_KEY, plan.to_json())
    return plan


def recorded_remainder(model: onnx.ModelProto) -> str | None:
    """The remainder's type (fp16, bf16, fp32) the typing stage recorded in the embedded
    plan, or None for a file without one (another tool's, a file never typed, or a plan
    that predates the record)."""
    text = get_metadata(model, PLAN_KEY)
    try:
        data = json.loads(text) if text else None
        # from_dict fills in a missing type with the default: no key, nothing recorded
        plan = PlacementPlan.from_dict(data) if "high_precision" in (data or {}) else None
    except (ValueError, QdqError):
        return None
    if plan is None or not plan.remainder_recorded:
        return None  # never typed: its plan's FP32 is the default, not a choice
    return plan.high_precision if plan.high_precision in HIGH_PRECISIONS else None
