"""Old pipeline names and call forms, kept working with a DeprecationWarning.

Renamed so that each CLI verb has the pipeline function of the same name and no stage
function shadows a package: `quantize` -> `insert`, `recalibrate` -> `calibrate`, `plan` ->
`plan_placement`, `Placement` -> `ResolvedPlacement`, `Quantized` -> `Inserted`; the old
`calibrate(model, plan, data)` is `measure_ranges` and the old `insert(model, plan, amax)`
is `apply_plan`; `weight_bits=N` is `PlacementConfig(weight_scheme="int8-Nbit")`."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from qdq_onnx.errors import SettingError
from qdq_onnx.placement.config import PlacementConfig
from qdq_onnx.scheme import DEFAULT_SCHEME, scheme_named

INT8_BITS = scheme_named(DEFAULT_SCHEME).bits
RENAMED = {"quantize": "insert", "recalibrate": "calibrate", "plan": "plan_placement",
           "Placement": "ResolvedPlacement", "Quantized": "Inserted"}


def warn(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"pipeline.{old} is deprecated: use pipeline.{new}", DeprecationWarning,
                  stacklevel=stacklevel)


def weight_bits_scheme(bits: int) -> str | None:
    """The weight scheme a `weight_bits` argument meant: the default scheme narrowed to
    `bits` (None for its full range: the rules' own schemes)."""
    default = scheme_named(DEFAULT_SCHEME)
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise SettingError("weight_bits", f"must be an integer, got {bits!r}")
    narrowed = default.with_bits(bits)
    return None if narrowed == default else narrowed.name


def placement_with_weight_bits(placement: PlacementConfig | None,
                               deprecated: dict[str, Any]) -> PlacementConfig | None:
    """`placement` with the old `weight_bits=N` keyword folded in as its weight scheme."""
    unknown = set(deprecated) - {"weight_bits"}
    if unknown:
        raise TypeError(f"insert() got unexpected keyword argument(s) {sorted(unknown)}")
    if "weight_bits" not in deprecated:
        return placement
    warnings.warn("insert(weight_bits=N) is deprecated: use PlacementConfig(weight_scheme="
                  "'int8-Nbit')", DeprecationWarning, stacklevel=3)
    scheme = weight_bits_scheme(deprecated["weight_bits"])
    return dataclasses.replace(placement or PlacementConfig(), weight_scheme=scheme)


def insert_plan(model, plan, amax=None, scale_source: str = "", weight_bits: int = INT8_BITS,
                in_place: bool = False):
    """The old `pipeline.insert(model, plan, amax, ...)`: `apply_plan`."""
    from qdq_onnx.pipeline.stages import apply_plan

    warnings.warn("pipeline.insert(model, plan, amax) is deprecated: use pipeline.apply_plan "
                  "(pipeline.insert now does what `qdq-onnx insert` does)",
                  DeprecationWarning, stacklevel=3)
    scheme = weight_bits_scheme(weight_bits)
    if scheme is not None:
        plan = dataclasses.replace(plan, placements=[
            dataclasses.replace(p, scheme=scheme) if p.kind == "weight" else p
            for p in plan.placements])
    return apply_plan(model, plan, amax, scale_source or "", in_place=in_place)


def quantize(model, placement=None, calibration=None, data=None, use_plan=None,
             weight_bits: int = INT8_BITS, copy: bool = True):
    """The old name of `pipeline.insert`."""
    from qdq_onnx.pipeline.stages import insert

    warn("quantize", "insert")
    if weight_bits_scheme(weight_bits) is not None:
        placement = dataclasses.replace(placement or PlacementConfig(),
                                        weight_scheme=weight_bits_scheme(weight_bits))
    return insert(model, placement, calibration, data, use_plan, copy)


def recalibrate(qdq_model, data, calibration=None):
    """The old name of `pipeline.calibrate`."""
    from qdq_onnx.pipeline.stages import calibrate

    warn("recalibrate", "calibrate")
    return calibrate(qdq_model, data, calibration)


def plan(model, placement=None):
    """The old name of `pipeline.plan_placement`."""
    from qdq_onnx.pipeline.stages import plan_placement

    warn("plan", "plan_placement")
    return plan_placement(model, placement)
