"""Quantization error report of a Q/DQ model on data: per quantized tensor the scale, the
fraction clipped and the signal-to-quantization-noise ratio (SQNR), and per weighted layer
the divergence of the Q/DQ output from the float output. One streamed pass over the data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from qdq_onnx.diagnostics.charts import png_bytes, pyplot
from qdq_onnx.diagnostics.config import ReportConfig
from qdq_onnx.diagnostics.metrics import sqnr_db
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.qdq import qdq_pairs, strip_qdq
from qdq_onnx.progress import progress
from qdq_onnx.quantize.scales import broadcast_scale, quantize_dequantize
from qdq_onnx.quantize.schemes import pair_schemes


@dataclass
class TensorRow:
    tensor: str
    kind: str  # weight | activation
    consumers: list[str]
    scale: float  # per-tensor scale, or the largest per-channel scale
    channels: int
    clipped: float  # fraction of values outside the representable range
    sqnr_db: float


@dataclass
class LayerError:
    node: str
    op_type: str
    output: str
    sqnr_db: float  # float output vs Q/DQ output
    rel_error: float  # ||q - f|| / ||f||


@dataclass
class ErrorReport:
    """The error report: one row per quantized tensor, one per weighted layer output."""

    tensors: list[TensorRow]
    layers: list[LayerError]

    def to_dict(self) -> dict[str, Any]:
        """{'tensors': [...], 'layers': [...]} of plain rows (what `--json` writes)."""
        return {"tensors": [asdict(r) for r in self.tensors],
                "layers": [asdict(r) for r in self.layers]}


def build_report(model: onnx.ModelProto, data: Any, config: ReportConfig | None = None
                 ) -> ErrorReport:
    from qdq_onnx.data.feeds import as_batches
    from qdq_onnx.graph.sessions import inference_session, run_checked, with_outputs

    index = GraphIndex(model.graph)
    pairs = qdq_pairs(model)
    scheme = pair_schemes(model, pairs, index)
    consumers: dict[str, list[str]] = {}
    for p in pairs:
        consumers[p.source] = sorted({u.node.name for u in index.consumers.get(p.output, ())})
    rows: list[TensorRow] = []
    for p in (p for p in pairs if p.is_weight):
        dq = index.by_name[p.dequantize]
        w = index.constant_value(p.source).astype(np.float32)
        scale = index.constant_value(p.scale).astype(np.float32)
        axis = attribute(dq, "axis", 1) if scale.size > 1 else None
        fq, clipped = quantize_dequantize(w, broadcast_scale(scale, w.ndim, axis),
                                          scheme[p.source])
        rows.append(TensorRow(p.source, "weight", consumers[p.source], float(scale.max()),
                              int(scale.size), clipped / w.size,
                              sqnr_db(float(np.sum(w.astype(np.float64) ** 2)),
                                      float(np.sum((w - fq).astype(np.float64) ** 2)))))
    acts = [p for p in pairs if not p.is_weight]
    act_scale = {p.source: index.constant_value(p.scale).astype(np.float32) for p in acts}
    # Layer outputs: outputs of nodes that read a dequantized weight.
    weighted = [u.node for p in pairs if p.is_weight for u in index.consumers.get(p.output, ())]
    layer_outputs = list(dict.fromkeys((n.name, n.op_type, n.output[0]) for n in weighted))
    float_model = strip_qdq(model)
    f_inputs = {i.name for i in float_model.graph.input}
    fetch_f = list(dict.fromkeys([t for t in act_scale if t not in f_inputs]
                                 + [o for _, _, o in layer_outputs]))
    fetch_q = [o for _, _, o in layer_outputs]
    f_sess = inference_session(with_outputs(float_model, fetch_f))
    q_sess = inference_session(with_outputs(model, fetch_q))
    acc = {t: np.zeros(4) for t in act_scale}  # signal, noise, clipped, count
    lacc = {o: np.zeros(2) for _, _, o in layer_outputs}  # signal, noise
    c = config or ReportConfig()
    batch_iter, total = as_batches(data, float_model, batch_size=c.batch_size,
                                   limit=c.max_samples, source="report data")
    with progress(total=total, desc="report", unit="sample", enable=c.show_progress) as bar:
        for feed in batch_iter:
            f_vals = dict(zip(fetch_f, run_checked(f_sess, fetch_f, feed))) if fetch_f else {}
            q_vals = dict(zip(fetch_q, run_checked(q_sess, fetch_q, feed))) if fetch_q else {}
            for t, s in act_scale.items():
                x = (f_vals[t] if t in f_vals else feed[t]).astype(np.float32)
                fq, clipped = quantize_dequantize(x, s.reshape(()), scheme[t])
                acc[t] += (np.sum(x.astype(np.float64) ** 2),
                           np.sum((x - fq).astype(np.float64) ** 2), clipped, x.size)
            for _, _, o in layer_outputs:
                f, q = f_vals[o].astype(np.float64), q_vals[o].astype(np.float64)
                lacc[o] += (np.sum(f ** 2), np.sum((q - f) ** 2))
            bar.update(next(iter(feed.values())).shape[0])
    for t, (sig, noise, clipped, count) in acc.items():
        rows.append(TensorRow(t, "activation", consumers[t], float(act_scale[t].max()), 1,
                              float(clipped / max(count, 1)), sqnr_db(sig, noise)))
    layers = [LayerError(n, op, o, sqnr_db(*lacc[o]),
                       float(np.sqrt(lacc[o][1] / lacc[o][0])) if lacc[o][0] > 0 else 0.0)
              for n, op, o in layer_outputs]
    return ErrorReport(rows, layers)


def render_text(report: ErrorReport) -> str:
    lines = [f"{'tensor':48} {'kind':10} {'scale':>10} {'ch':>5} {'clipped':>9} {'SQNR dB':>8}"]
    for r in report.tensors:
        lines.append(f"{r.tensor[:48]:48} {r.kind:10} {r.scale:10.3g} "
                     f"{r.channels:5d} {r.clipped * 100:8.4f}% {r.sqnr_db:8.2f}")
    lines.append("")
    lines.append(f"{'layer output (float vs Q/DQ)':48} {'op':10} {'SQNR dB':>8} {'rel err':>9}")
    for r in report.layers:
        lines.append(f"{r.node[:48]:48} {r.op_type:10} {r.sqnr_db:8.2f} {r.rel_error:9.4f}")
    return "\n".join(lines)


def sqnr_chart(report: ErrorReport) -> bytes:
    """Bar charts of SQNR per quantized tensor and per layer output, as PNG bytes."""
    plt = pyplot()
    tensors, layers = report.tensors, report.layers
    height = max(4.0, 0.22 * max(len(tensors), len(layers)) + 1.5)
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, height))
    colors = ["tab:blue" if r.kind == "weight" else "tab:orange" for r in tensors]
    a.barh([r.tensor[-40:] for r in tensors], [min(r.sqnr_db, 80) for r in tensors],
           color=colors)
    a.set_title("SQNR per quantized tensor (blue: weight, orange: activation)")
    b.barh([r.node[-40:] for r in layers], [min(r.sqnr_db, 80) for r in layers],
           color="tab:green")
    b.set_title("Layer output: float vs Q/DQ SQNR")
    for ax in (a, b):
        ax.set_xlabel("dB")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return png_bytes(fig, dpi=110)
