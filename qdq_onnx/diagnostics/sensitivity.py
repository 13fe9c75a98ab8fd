"""Per-layer quantization sensitivity: the metric when only one layer is quantized and when
only one layer is left float, a ranking, and a greedy partial-quantization spec that keeps
the accuracy drop under a target."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from qdq_onnx.diagnostics.charts import png_bytes, pyplot
from qdq_onnx.diagnostics.metrics import output_sqnr_db
from qdq_onnx.errors import QdqError, SettingError
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.quantize.insert import insert_qdq


@dataclass
class LayerSensitivity:
    layer: str
    placements: int
    only_this_quantized: float
    only_this_float: float
    recovery: float  # metric gained by leaving this layer float (vs everything quantized)


@dataclass
class SensitivityReport:
    metric: str  # "accuracy" | "sqnr_db"
    float_metric: float
    quantized_metric: float
    layers: list[LayerSensitivity]
    chosen_float: list[str] | None = None
    chosen_metric: float | None = None
    target_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what `sensitivity --json` writes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SensitivityReport:
        """The report `to_dict` wrote; a QdqError naming what is missing or unknown."""
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise QdqError("not a sensitivity report (no list of layers)")
        try:
            return cls(**{**data, "layers": [LayerSensitivity(**x) for x in data["layers"]]})
        except (TypeError, KeyError) as exc:
            raise QdqError(f"not a sensitivity report ({type(exc).__name__}: {exc})") from exc


def read_report(path: str | os.PathLike) -> SensitivityReport:
    """A sensitivity report from the JSON `sensitivity --json` wrote."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QdqError(f"{path}: not a sensitivity JSON ({exc})") from exc
    try:
        return SensitivityReport.from_dict(data)
    except QdqError as exc:
        raise QdqError(f"{path}: {exc}") from exc


def layer_groups(plan: PlacementPlan) -> dict[str, list]:
    """Placements grouped by layer: the Keras layer when known, else the consumer node."""
    return plan.layer_groups()


class _Evaluator:
    def __init__(self, float_model: onnx.ModelProto, x: dict[str, np.ndarray],
                 labels: np.ndarray | None, batch_size: int) -> None:
        self.float_model, self.x, self.labels, self.batch = float_model, x, labels, batch_size
        self.reference = self.outputs(float_model)

    def outputs(self, model: onnx.ModelProto) -> np.ndarray:
        from qdq_onnx.graph.sessions import inference_session, run_checked

        sess = inference_session(model)
        name = sess.get_outputs()[0].name
        n = next(iter(self.x.values())).shape[0]
        return np.concatenate([run_checked(sess, [name], {k: v[i:i + self.batch]
                                                     for k, v in self.x.items()})[0]
                               for i in range(0, n, self.batch)])

    def metric(self, model: onnx.ModelProto) -> float:
        out = self.outputs(model)
        if self.labels is not None:
            return float(np.mean(np.argmax(out, axis=-1) == self.labels))
        return output_sqnr_db(self.reference, out)


def analyse(float_model: onnx.ModelProto, plan: PlacementPlan, amax: dict[str, float],
            x: dict[str, np.ndarray], labels: np.ndarray | None = None,
            batch_size: int = 256, target_drop: float | None = None) -> SensitivityReport:
    """`float_model` is the prepared float model the plan was made for; each placement is
    quantized in its own scheme."""
    ev = _Evaluator(float_model, x, labels, batch_size)
    groups = layer_groups(plan)
    if not groups:
        raise QdqError("the plan quantizes nothing: no layer to analyse")

    def with_placements(keep) -> float:
        sub = PlacementPlan(placements=list(keep), mode=plan.mode, rules=plan.rules)
        model, _ = insert_qdq(float_model, sub, amax)
        return ev.metric(model)

    float_metric = ev.metric(float_model) if labels is not None else float("inf")
    full = with_placements(plan.placements)
    rows = []
    for name, members in groups.items():
        ids = {id(p) for p in members}
        only = with_placements(members)
        others = with_placements(p for p in plan.placements if id(p) not in ids)
        rows.append(LayerSensitivity(name, len(members), only, others, others - full))
    rows.sort(key=lambda r: (-r.recovery, r.only_this_quantized))
    report = SensitivityReport("accuracy" if labels is not None else "sqnr_db",
                               float_metric, full, rows, target_drop=target_drop)
    if target_drop is not None:
        if labels is None:
            raise SettingError("target_drop", "needs labels (accuracy): store them under "
                                              "'labels'")
        chosen: list[str] = []
        current = full
        for row in rows:  # greedy on the ranking: most recovering layers first
            if float_metric - current <= target_drop:
                break
            chosen.append(row.layer)
            left = {id(p) for name in chosen for p in groups[name]}
            current = with_placements(p for p in plan.placements if id(p) not in left)
        report.chosen_float, report.chosen_metric = chosen, current
    return report


def spec_yaml(layers: list[str], note: str) -> str:
    lines = [f"# {note}", "mode: full", "layers:"]
    for name in layers:
        lines += [f"  - name: {json_quote(name)}", "    quantize_input: false",
                  "    quantize_weight: false"]
    if not layers:
        lines[-1] = "layers: []"
    return "\n".join(lines) + "\n"


def json_quote(text: str) -> str:
    """`text` as a double-quoted YAML scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def sensitivity_chart(report: SensitivityReport) -> bytes:
    """Per-layer sensitivity bars (most sensitive first), as PNG bytes."""
    plt = pyplot()
    rows = report.layers
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.35 * len(rows) + 1.5)))
    y = np.arange(len(rows))
    scale = 100 if report.metric == "accuracy" else 1
    ax.barh(y - 0.2, [r.only_this_float * scale for r in rows], 0.4,
            label="all quantized but this layer")
    ax.barh(y + 0.2, [r.only_this_quantized * scale for r in rows], 0.4,
            label="only this layer quantized")
    ax.axvline(report.quantized_metric * scale, color="k", ls="--", lw=1,
               label="everything quantized")
    if report.metric == "accuracy":
        ax.axvline(report.float_metric * scale, color="g", ls=":", lw=1, label="float")
    ax.set_yticks(y, [r.layer[-40:] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%)" if report.metric == "accuracy" else "output SQNR (dB)")
    ax.set_title("Per-layer quantization sensitivity (most sensitive first)")
    lo = min(min(r.only_this_float, r.only_this_quantized) for r in rows) * scale
    hi = max(max(r.only_this_float, r.only_this_quantized) for r in rows) * scale
    if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
        ax.set_xlim(lo - 0.1 * (hi - lo) - 0.05, hi + 0.1 * (hi - lo) + 0.05)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return png_bytes(fig)
