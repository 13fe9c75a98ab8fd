"""The old pipeline names, kept as aliases with a DeprecationWarning until their announced
removal version (a test fails once the package version reaches it).

Renamed so that each CLI verb has the pipeline function of the same name and no stage
function shadows a package: `quantize` -> `insert`, `recalibrate` -> `calibrate`, `plan` ->
`plan_placement`, `Quantized` -> `Inserted`. Moved off the façade (it holds the verbs, the
settings and the results): the rest, each to the module that defines it or to the package
that exports it. `weight_bits=N` is `PlacementConfig(weight_scheme="int8-Nbit")`."""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from typing import Any

from qdq_onnx.errors import SettingError
from qdq_onnx.types.scheme import DEFAULT_SCHEME, scheme_named

REMOVAL = "0.3.0"  # announced in docs/architecture.md
# old name -> "module:attribute" of what it is now (a "pipeline:" target is a façade name)
ALIASES = {
    "quantize": "qdq_onnx.pipeline.deprecated:quantize",
    "recalibrate": "qdq_onnx.pipeline.deprecated:recalibrate",
    "plan": "pipeline:plan_placement", "Quantized": "pipeline:Inserted",
    "Placement": "qdq_onnx.placement.config:ResolvedPlacement",
    "ResolvedPlacement": "qdq_onnx.placement.config:ResolvedPlacement",
    "prepare": "qdq_onnx.convert.prepare:prepare_model",
    "measure_ranges": "qdq_onnx.quantize.calibration:calibrate_plan",
    "widen": "qdq_onnx.precision.widen:widen",
    "Training": "qdq_onnx.pipeline.training:Training",
    "run_model": "qdq_onnx.pipeline.running:run_model",
    **{n: f"qdq_onnx.finetune:{n}" for n in ("Callback", "EpochPrinter", "StopAfterSteps",
                                              "History", "RunState")},
    **{n: f"qdq_onnx.finetune.backend:{n}" for n in ("BACKENDS", "register_backend",
                                                      "require_backend",
                                                      "backend_description")},
    **{n: f"qdq_onnx:{n}" for n in ("PlacementPlan", "QuantizationSpec",
                                     "CustomQDQInsertionCase")},
    "RuleSet": "qdq_onnx.placement.rules:RuleSet",
    "InsertReport": "qdq_onnx.quantize.insert:InsertReport",
    **{n: f"qdq_onnx.types.scheme:{n}" for n in ("SCHEMES", "Scheme", "scheme_named")},
    "METHODS": "qdq_onnx.quantize.config:METHODS",
    "HIGH_PRECISIONS": "qdq_onnx.types.float_type:HIGH_PRECISIONS",
    **{n: f"qdq_onnx.graph.macs:{n}" for n in ("layer_costs", "quantized_macs_share",
                                               "data_shapes")},
    **{n: f"qdq_onnx.pipeline.config:{n}" for n in ("default_of", "make_config",
                                                    "setting_names")},
    **{n: f"qdq_onnx.pipeline.diagnostics:{n}" for n in (
        "describe", "render_error_report", "error_report_chart", "sensitivity_chart",
        "sensitivity_spec", "write_png")},
    "weight_bits_scheme": "qdq_onnx.pipeline.plumbing:weight_bits_scheme",
    "write_text_atomic": "qdq_onnx.files.atomic:write_text_atomic",
    **{n: f"qdq_onnx.files.onnx_files:{n}" for n in ("ModelFile", "check_output")},
    **{n: f"qdq_onnx.parallel.world:{n}" for n in ("world", "launched_by_mpi")},
    **{n: f"qdq_onnx.parallel.launch:{n}" for n in ("launch", "record_rank", "finish_rank")},
    "runtime_failure": "qdq_onnx.graph.sessions:runtime_failure",
}


def new_name(old: str) -> str:
    """What to write instead of `pipeline.<old>`."""
    module, attr = ALIASES[old].split(":")
    if module == "pipeline":
        return f"pipeline.{attr}"
    if module == "qdq_onnx.pipeline.deprecated":
        return f"pipeline.{ {'quantize': 'insert', 'recalibrate': 'calibrate'}[old]}"
    return f"{module}.{attr}"


def resolve(old: str, stacklevel: int = 2) -> Any:
    """The object `pipeline.<old>` names now, with a DeprecationWarning saying where it is
    and when the alias goes."""
    warnings.warn(f"pipeline.{old} is deprecated: use {new_name(old)} (the alias is removed "
                  f"in {REMOVAL})", DeprecationWarning, stacklevel=stacklevel)
    module, attr = ALIASES[old].split(":")
    return getattr(importlib.import_module("qdq_onnx.pipeline" if module == "pipeline"
                                           else module), attr)


def weight_bits_scheme(bits: int) -> str | None:
    """The weight scheme a `weight_bits` argument meant: the default scheme narrowed to
    `bits` (None for its full range: the rules' own schemes)."""
    default = scheme_named(DEFAULT_SCHEME)
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise SettingError("weight_bits", f"must be an integer, got {bits!r}")
    narrowed = default.with_bits(bits)
    return None if narrowed == default else narrowed.name


def quantize(model, placement=None, calibration=None, data=None, use_plan=None,
             weight_bits: int | None = None, copy: bool = True):
    """The old name of `pipeline.insert` (and its `weight_bits=N`)."""
    from qdq_onnx.pipeline.stages import insert
    from qdq_onnx.placement.config import PlacementConfig

    scheme = None if weight_bits is None else weight_bits_scheme(weight_bits)
    if scheme is not None:
        placement = dataclasses.replace(placement or PlacementConfig(), weight_scheme=scheme)
    return insert(model, placement, calibration, data, use_plan, copy)


def recalibrate(qdq_model, data, calibration=None):
    """The old name of `pipeline.calibrate`."""
    from qdq_onnx.pipeline.stages import calibrate

    return calibrate(qdq_model, data, calibration)
