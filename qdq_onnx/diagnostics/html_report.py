"""One self-contained HTML report (inline CSS, images embedded as data URIs, no scripts, no
network): placement with the rule behind each decision, lint, per-layer SQNR, sensitivity,
and the accuracy/latency tables of the benchmark results."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from qdq_onnx.files.metadata import PLAN_KEY, get_metadata

if TYPE_CHECKING:
    from qdq_onnx.diagnostics.error_report import ErrorReport
    from qdq_onnx.diagnostics.sensitivity import SensitivityReport

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #76b900;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
.ok{color:#2a7d2a;font-weight:600}.bad{color:#b00020;font-weight:600}.warn{color:#a66300}
.muted{color:#777}img{max-width:100%}code{background:#f5f5f5;padding:0 3px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]], raw: bool = False) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes) -> str:
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def build_html(model: onnx.ModelProto, name: str, lint: Any,
               quant: ErrorReport | None = None, sensitivity: SensitivityReport | None = None,
               bench: dict[str, Any] | None = None) -> str:
    """The report as one HTML document: summary, placement, lint, and the optional SQNR,
    sensitivity and benchmark sections."""
    from qdq_onnx.diagnostics.quantized_inputs import quantized_inputs
    from qdq_onnx.placement.plan import PlacementPlan

    rows = quantized_inputs(model)
    plan_json = get_metadata(model, PLAN_KEY)
    plan = PlacementPlan.from_dict(json.loads(plan_json)) if plan_json else None
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>qdq-onnx report: "
             f"{_esc(name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>qdq-onnx report: {_esc(name)}</h1>",
             f"<p class='muted'>generated {time.strftime('%Y-%m-%d %H:%M')} by qdq-onnx; "
             "self-contained: no scripts, no network.</p>"]
    parts += _summary(model, rows, plan, lint)
    parts += _placement(rows, plan)
    parts += _lint(lint)
    if quant is not None:
        parts += _sqnr(quant)
    if sensitivity is not None:
        parts += _sensitivity(sensitivity)
    if bench:
        parts.append("<h2 id='results'>Accuracy and latency</h2>")
        parts.extend(_bench_tables(bench))
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary(model, rows, plan, lint) -> list[str]:
    summary = [["quantized inputs", len(rows)],
               ["Q/DQ pairs", sum(n.op_type == "QuantizeLinear" for n in model.graph.node)],
               ["lint", lint.summary()]]
    if plan is not None:
        summary += [["rules", plan.rules.get("name", "?")], ["mode", plan.mode],
                    ["float remainder", f"{plan.high_precision}, {len(plan.kept_fp32)} op(s) "
                                        "kept FP32 by the range guard"]]
        guard = plan.accuracy_guard
        if guard:
            summary.append(["accuracy guard", f"{guard['rule']}: moved {len(guard['moved'])} "
                            f"layer(s) ({', '.join(guard['moved']) or 'none'}) in "
                            f"{guard['trials']} trial(s) on {guard['samples']} calibration "
                            f"samples; target {'met' if guard['met'] else 'NOT met'}; before "
                            f"{guard['before']}; after {guard['after']}"])
        refined = plan.scale_refinement
        if refined:
            factors = ", ".join(f"{k} x{v:g}" for k, v in refined["factors"].items())
            summary.append(["scale refinement", f"{refined['rule']}: {len(refined['factors'])} "
                            f"of {refined['keys']} {refined['method']} range(s) rescaled "
                            f"({factors or 'none'}) in {refined['evaluations']} evaluation(s) on "
                            f"{refined['samples']} calibration samples; divergence from the "
                            f"float outputs {refined['divergence']['before']:.3g} -> "
                            f"{refined['divergence']['after']:.3g}"])
    return ["<h2 id='summary'>Summary</h2>", _table(["", ""], summary)]


def _placement(rows, plan) -> list[str]:
    out = ["<h2 id='placement'>Placement</h2>"]
    if plan is None:
        out.append("<p class='muted'>No placement plan in this file (not made by qdq-onnx); "
                   "quantized inputs found in the graph:</p>")
        out.append(_table(["node", "op", "input", "kind", "axis", "rule"],
                          [[r.node, r.op_type, r.input, r.kind, r.axis, r.rule]
                           for r in rows]))
        return out
    prow = [[p.consumer, p.input, p.kind, "-" if p.axis is None else p.axis, p.layer or "-",
             p.rule, p.reason] for p in plan.placements]
    prow += [[f.consumer, f.input, "float", "-", f.layer or "-", f.rule, f.reason]
             for f in plan.left_float]
    prow += [[k.node, "-", "fp32 island", "-", k.op, k.rule, k.reason] for k in plan.kept_fp32]
    out.append(_table(["node", "input", "kind", "axis", "layer", "rule", "why"], prow))
    return out


def _lint(lint) -> list[str]:
    out = ["<h2 id='lint'>TensorRT lint</h2>", f"<p><b>{_esc(lint.summary())}</b></p>",
           _table(["weighted layer", "op", "runs in", "axis"],
                  [[r.node, r.op_type,
                    f"<span class='ok'>{_esc(r.scheme)}</span>" if r.quantized else
                    "<span class='bad'>no</span>", "-" if r.axis is None else r.axis]
                   for r in lint.layers], raw=True)]
    if lint.findings:
        out.append(_table(["severity", "id", "check", "node", "detail"],
                          [[f.severity, f.id, f.name, f.node, f.message]
                           for f in lint.findings]))
    return out


def _sqnr(quant: ErrorReport) -> list[str]:
    from qdq_onnx.diagnostics.error_report import sqnr_chart

    return ["<h2 id='sqnr'>Per-layer SQNR</h2>", _img(sqnr_chart(quant)),
            _table(["tensor", "kind", "scale", "clipped", "SQNR dB"],
                   [[t.tensor, t.kind, f"{t.scale:.4g}", f"{t.clipped * 100:.3f}%",
                     f"{t.sqnr_db:.2f}"] for t in quant.tensors])]


def _sensitivity(rep: SensitivityReport) -> list[str]:
    from qdq_onnx.diagnostics.sensitivity import sensitivity_chart

    out = ["<h2 id='sensitivity'>Layer sensitivity</h2>", _img(sensitivity_chart(rep))]
    if rep.chosen_float is not None:
        kept = ", ".join(rep.chosen_float) or "no layer (the target is met fully quantized)"
        out.append(f"<p>--target-drop keeps float: {_esc(kept)}</p>")
    return out


def _bench_tables(bench: dict[str, Any]) -> list[str]:
    out = []
    ptq = bench.get("ptq_mnist")
    if ptq:
        res = ptq["results"]
        fp = res["fp32"]["accuracy"]
        out.append("<h3>Calibration (PTQ) accuracy</h3>")
        out.append(_table(["model", "accuracy", "vs FP32"],
                          [[k, f"{v['accuracy'] * 100:.2f}%",
                            f"{(v['accuracy'] - fp) * 100:+.2f}"] for k, v in res.items()]))
    qat = bench.get("qat_mnist")
    if qat:
        acc = qat["accuracy"]
        out.append("<h3>Fine-tuning (QAT) accuracy</h3>")
        out.append(_table(["stage", "accuracy", "vs FP32"],
                          [[k, f"{v * 100:.2f}%", f"{(v - acc['fp32']) * 100:+.2f}"]
                           for k, v in acc.items()]))
    inf = bench.get("inference")
    if inf:
        out.append("<h3>Inference latency (onnxruntime CPU proxy)</h3>")
        out.append(_table(["batch", "FP32 ms", "INT8 Q/DQ ms", "ratio"],
                          [[b, f"{r['median_ms']['fp32']:.3f}", f"{r['median_ms']['int8']:.3f}",
                            f"{r['int8_over_fp32']:.2f}"] for b, r in inf["results"].items()]))
    ft = bench.get("finetune")
    if ft:
        out.append("<h3>Fine-tuning speed (seconds per epoch)</h3>")
        out.append(_table(["batch", "qdq-onnx QAT", "ORT float", "TensorFlow QAT"],
                          [[b, *(f"{r['epoch_seconds_median'][k]:.2f}" for k in
                                 ("qdq_onnx_qat", "ort_float", "tensorflow_qat"))]
                           for b, r in ft["results"].items()]))
    return out


def load_bench(folder: str | Path) -> dict[str, Any]:
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
    return out


