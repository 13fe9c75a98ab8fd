"""The typing stage: range guard, then the remainder typed, and the plan updated (the
type and every FP32 island with its rule) in the file's embedded plan."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import onnx

from qdq_onnx.files.metadata import PLAN_KEY, get_metadata
from qdq_onnx.placement.plan import KeptFP32, PlacementPlan
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.precision.bias_headroom import raise_bias_headroom
from qdq_onnx.precision.config import RANGE_GUARD_SAMPLES, PrecisionConfig
from qdq_onnx.precision.guard import guard_decisions, measure_ranges
from qdq_onnx.precision.record import record_remainder
from qdq_onnx.precision.remainder import TypingReport, opset_for, type_remainder
from qdq_onnx.precision.widen import widen
from qdq_onnx.types.float_type import float_type


@dataclass
class Typed:
    """What the typing made: the model, the FP32 islands, the report and the embedded plan
    as updated (None for a file without one)."""

    model: onnx.ModelProto
    kept_fp32: list[KeptFP32]
    report: TypingReport
    notes: list[str] = field(default_factory=list)
    plan: PlacementPlan | None = None  # the file's plan with the type and islands recorded

    def lines(self) -> list[str]:
        """Notes for the CLI."""
        return [*self.report.lines(), *self.notes]


def rules_of(model: onnx.ModelProto) -> RuleSet:
    """The rule set the model's embedded plan names (bundled by name, else its path), else
    the bundled TensorRT rules."""
    from pathlib import Path

    from qdq_onnx.placement.rules import bundled_rule_files, default_rules, load_rules

    text = get_metadata(model, PLAN_KEY)
    rules = json.loads(text).get("rules", {}) if text else {}
    name, path = rules.get("name"), rules.get("path")
    if name in bundled_rule_files():
        return load_rules(name)
    if path and Path(path).is_file():
        return load_rules(path)
    return default_rules()


def type_model(model: onnx.ModelProto, config: PrecisionConfig | None = None,
               data: Any = None, calibration: Any = None, rules: RuleSet | None = None,
               run: Any = None, copy: bool = True) -> Typed:
    """`model` (a Q/DQ model, any remainder type) with its remainder in the configured type;
    activation ranges for the guard from `data` (at most RANGE_GUARD_SAMPLES samples, in
    `calibration`'s batches, shared by the ranks of `run`, a RunContext). `model` is not
    modified unless `copy=False` (a caller that does not need it after: no weight is
    copied)."""
    config = config or PrecisionConfig()
    rules = rules or rules_of(model)
    kind = float_type(config.high_precision or rules.precision.high_precision)
    widened = widen(model)
    owned = widened is not model or not copy
    notes: list[str] = []
    guarding = config.range_guard and not kind.is_fp32
    ranges = None
    if guarding and data is not None:
        # before any upgrade: onnxruntime 1.19 runs opsets up to 21
        ranges = _ranges(widened, data, calibration, run)
    elif guarding:
        notes.append(f"range guard: no data, so activation ranges were not checked (only "
                     f"weights and op definitions); give calibration data to check that "
                     f"no {kind.name} activation overflows")
    model, upgraded = opset_for(widened, kind, in_place=owned)  # the guard judges ops at it
    notes[:0] = [upgraded] if upgraded else []
    kept = guard_decisions(model, kind, rules.precision, ranges) if guarding else []
    typed, report = type_remainder(model, kind, {k.node for k in kept}, config.keep_io_types,
                                   in_place=owned or upgraded is not None)
    if kind.name == "fp16":  # bias_headroom.py: onnxruntime's int32 bias overflows FP16
        notes += raise_bias_headroom(typed).lines()
    plan = record_remainder(typed, kind.name, kept)
    if kind.is_fp32:
        notes += _relu_fusion_note(typed)
    return Typed(typed, kept, report, notes, plan)


def _relu_fusion_note(model: onnx.ModelProto) -> list[str]:
    from qdq_onnx.quantize.fp8_files import relu_fusion_hazards

    found = relu_fusion_hazards(model)
    if not found:
        return []
    return [f"{len(found)} Relu(s) feed an FP8 QuantizeLinear in FP32 (e.g. {found[0]!r}): "
            f"onnxruntime's CPU ReluQuantFusion removes them at its default optimization "
            f"level (ORT_ENABLE_EXTENDED and up, 1.19 to 1.32), so onnxruntime computes "
            f"this file wrongly there; TensorRT reads it as written. Evaluate it in "
            f"onnxruntime with ORT_ENABLE_BASIC, or keep the FP16 remainder (the default)"]


def _ranges(model: onnx.ModelProto, data: Any, calibration: Any, run: Any
            ) -> dict[str, float]:
    from dataclasses import replace

    from qdq_onnx.quantize.config import CalibrationConfig

    c = calibration or CalibrationConfig()
    limit = min(c.max_samples or RANGE_GUARD_SAMPLES, RANGE_GUARD_SAMPLES)
    return measure_ranges(model, data, replace(c, max_samples=limit), run)
