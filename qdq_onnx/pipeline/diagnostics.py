"""The diagnostics beside the pipeline, one function per CLI verb: `inspect` (and its error
report), `lint`, `sensitivity`, `report`, `rules`, plus `describe` for one-line summaries."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from qdq_onnx.diagnostics.config import REPORT_SAMPLES, ReportConfig, SensitivityConfig
from qdq_onnx.placement.config import PlacementConfig
from qdq_onnx.placement.rules import RuleSet, load_rules
from qdq_onnx.quantize.config import CalibrationConfig

if TYPE_CHECKING:
    from qdq_onnx.diagnostics.error_report import ErrorReport
    from qdq_onnx.diagnostics.quantized_inputs import ModelSummary
    from qdq_onnx.diagnostics.sensitivity import SensitivityReport


def _rule_set(name: RuleSet | str | os.PathLike | None) -> RuleSet:
    return name if isinstance(name, RuleSet) else load_rules(name)


def rules(name: RuleSet | str | os.PathLike | None = None) -> RuleSet:
    """A rule set: a rule-file path, a bundled name (tensorrt, nvidia-tf-toolkit), or None
    for the default."""
    return _rule_set(name)


def describe(model: onnx.ModelProto) -> dict[str, Any]:
    """Nodes, default opset and the number of Keras layers its layer map names."""
    from qdq_onnx.files.onnx_files import default_opset
    from qdq_onnx.graph.layers import read_layer_map

    layer_map = read_layer_map(model)
    return {"nodes": len(model.graph.node), "opset": default_opset(model),
            "keras_layers": len(layer_map.layers) if layer_map else 0}


def inspect(model: onnx.ModelProto) -> ModelSummary:
    """Every quantized input of a Q/DQ model (ours or another tool's): activation or weight,
    axis, scale count, precision scheme, rule and Keras layer; Q/DQ node counts, the float
    remainder and the plan's records (a ModelSummary)."""
    from qdq_onnx.diagnostics.quantized_inputs import summary

    return summary(model)


def error_report(model: onnx.ModelProto, data: Any, config: ReportConfig | None = None
                 ) -> ErrorReport:
    """Per quantized tensor scale, clipping and SQNR; per weighted layer float-vs-Q/DQ
    (`inspect --data`), on `data` read as `config` (a ReportConfig) says."""
    from qdq_onnx.diagnostics.error_report import build_report

    return build_report(model, data, config)


def lint(model: onnx.ModelProto, rules: RuleSet | str | os.PathLike | None = None,
         typing: str = "strong"):
    """TensorRT INT8 and fusion check of any Q/DQ model (a LintReport); `typing` strong
    (TensorRT 11) also checks what the float remainder runs in, weak does not."""
    from qdq_onnx.diagnostics.lint import lint_model

    return lint_model(model, _rule_set(rules), typing)


def sensitivity(model: onnx.ModelProto, x: dict[str, np.ndarray], labels: np.ndarray | None,
                placement: PlacementConfig | None = None,
                config: SensitivityConfig | None = None, calibration_data: Any = None):
    """Per-layer sensitivity of a float model on the first `config.max_samples` of `x`
    (accuracy with `labels`, output SQNR without) and, with `config.target_drop` (accuracy
    points), the fewest layers to leave float to stay within it."""
    from qdq_onnx.diagnostics.sensitivity import analyse
    from qdq_onnx.pipeline.stages import _prepare_and_plan
    from qdq_onnx.quantize.calibration import calibrate_plan

    config = config or SensitivityConfig()
    n = min(config.max_samples, next(iter(x.values())).shape[0])
    x = {k: v[:n] for k, v in x.items()}
    labels = None if labels is None else labels[:n]
    prepared, made, _ = _prepare_and_plan(model, placement, copy=True)
    c = CalibrationConfig(max_samples=config.calibration_samples, show_progress=False)
    amax = calibrate_plan(prepared, made, calibration_data if calibration_data is not None
                          else x, c).amax
    drop = None if config.target_drop is None else config.target_drop / 100.0
    return analyse(prepared, made, amax, x, labels, config.batch_size, target_drop=drop)


def read_sensitivity(path: str | os.PathLike) -> SensitivityReport:
    """The sensitivity report `sensitivity --json` wrote (for `report`)."""
    from qdq_onnx.diagnostics.sensitivity import read_report

    return read_report(path)


def report(model: onnx.ModelProto, name: str, rules: RuleSet | str | None = None,
           data: Any = None, config: ReportConfig | None = None,
           sensitivity: SensitivityReport | None = None,
           bench_dir: str | os.PathLike | None = None) -> str:
    """One self-contained HTML report of a Q/DQ model (the error report on `data` read as
    `config` says: at most 512 samples by default)."""
    from qdq_onnx.diagnostics.html_report import build_html, load_bench

    config = config or ReportConfig(max_samples=REPORT_SAMPLES)
    quant = error_report(model, data, config) if data is not None else None
    bench = load_bench(bench_dir) if bench_dir else None
    return build_html(model, name, lint(model, rules), quant, sensitivity, bench)


def render_error_report(report_data: ErrorReport) -> str:
    """The error report as a text table."""
    from qdq_onnx.diagnostics.error_report import render_text

    return render_text(report_data)


def error_report_chart(report_data: ErrorReport) -> bytes:
    """The error report's SQNR bars as PNG bytes."""
    from qdq_onnx.diagnostics.error_report import sqnr_chart

    return sqnr_chart(report_data)


def sensitivity_chart(result: SensitivityReport) -> bytes:
    """The sensitivity bars as PNG bytes."""
    from qdq_onnx.diagnostics.sensitivity import sensitivity_chart as chart

    return chart(result)


def sensitivity_spec(layers: list[str], note: str) -> str:
    """A spec YAML that leaves `layers` float."""
    from qdq_onnx.diagnostics.sensitivity import spec_yaml

    return spec_yaml(layers, note)


def write_png(data: bytes, path: str | os.PathLike):
    """Write PNG bytes atomically."""
    from qdq_onnx.diagnostics.charts import write_png as write

    return write(data, path)
