"""How a quantized model's outputs agree with the float model's, without labels.

An output is class-like when a Softmax/LogSoftmax makes it (its axis holds the classes) or
when it is a 2-D [batch, classes] matrix; its agreement is the fraction of samples whose
argmax is the float model's: top-1 for [batch, classes], per position for a sequence or a
map (a CTC recogniser's [batch, time, classes]: whole-line agreement would count two
alignments that decode to the same text as a miss; a segmentation map: per pixel). Every
output also gets its SQNR, the measure of the outputs that are not class-like (boxes, maps,
embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from qdq_onnx.graph.index import GraphIndex, attribute

_PROBABILITY_OPS = ("Softmax", "LogSoftmax")
_PASS_THROUGH = ("Identity",)
MAX_DB = 200.0


def class_axes(model: onnx.ModelProto) -> dict[str, int | None]:
    """Per graph output, the axis holding its classes, or None when it is not class-like."""
    index = GraphIndex(model.graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    out: dict[str, int | None] = {}
    for vi in model.graph.output:
        node, reshaped = index.producer.get(vi.name), False
        while node is not None and node.op_type in (*_PASS_THROUGH, "Reshape"):
            reshaped = reshaped or node.op_type == "Reshape"
            node = index.producer.get(node.input[0])
        rank = len(vi.type.tensor_type.shape.dim) if vi.type.tensor_type.HasField(
            "shape") else None
        axis = int(attribute(node, "axis", -1 if opset >= 13 else 1)) if node is not None \
            and node.op_type in _PROBABILITY_OPS else None
        if axis is not None and not reshaped:
            out[vi.name] = axis
        elif axis is not None and _last_axis(node, axis, index):
            # the opset-13 converter's Flatten -> Softmax -> Reshape: classes stay last
            out[vi.name] = -1
        elif rank == 2:
            out[vi.name] = -1
        else:
            out[vi.name] = None
    return out


def _last_axis(node: onnx.NodeProto, axis: int, index: GraphIndex) -> bool:
    """Whether a Softmax's `axis` is the last axis of its input (rank from a Flatten, which
    makes 2-D, or a value info)."""
    if axis == -1:
        return True
    src = index.producer.get(node.input[0])
    if src is not None and src.op_type == "Flatten":
        return axis == 1
    vi = next((v for v in index.graph.value_info if v.name == node.input[0]), None)
    rank = len(vi.type.tensor_type.shape.dim) if vi is not None else None
    return rank is not None and axis == rank - 1


@dataclass
class OutputAgreement:
    """Running agreement of one output: argmax matches over `units` (samples, or
    positions), and the signal and noise power for its SQNR."""

    axis: int | None
    matches: int = 0
    units: int = 0
    signal: float = 0.0
    noise: float = 0.0

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        finite = np.isfinite(got64)
        self.signal += float(np.sum(ref64 ** 2))
        self.noise += float(np.sum(np.where(finite, got64 - ref64, np.abs(ref64) + 1.0) ** 2))
        axis = self.axis
        if axis is None or ref.ndim < 2 or ref.shape[axis] < 2:
            self.axis = None
            return
        same = np.argmax(ref, axis=axis) == np.argmax(got, axis=axis)
        self.matches += int(np.count_nonzero(same))
        self.units += int(same.size)

    @property
    def agreement(self) -> float | None:
        return self.matches / self.units if self.axis is not None and self.units else None

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return MAX_DB
        if self.signal == 0.0:
            return -MAX_DB
        return max(-MAX_DB, min(MAX_DB, 10.0 * math.log10(self.signal / self.noise)))


@dataclass
class Agreement:
    """Agreement of every output with the float model's on the same samples."""

    outputs: dict[str, OutputAgreement] = field(default_factory=dict)
    samples: int = 0

    def shortfall(self, agreement: float, sqnr_db: float) -> float:
        """How far the outputs are from the targets (0 when every output meets them):
        agreement points for class-like outputs, SQNR dB / 100 for the others."""
        classes, db = self.shortfall_parts(agreement, sqnr_db)
        return classes + db / 100.0

    def shortfall_parts(self, agreement: float, sqnr_db: float) -> tuple[float, float]:
        """The shortfall of the class-like outputs (agreement points) and of the others (SQNR
        dB), apart."""
        classes = db = 0.0
        for o in self.outputs.values():
            a = o.agreement
            if a is not None:
                classes += max(0.0, agreement - a)
            else:
                db += max(0.0, sqnr_db - o.sqnr_db)
        return classes, db

    def describe(self) -> str:
        """One clause per output: its agreement or its SQNR."""
        parts = []
        for name, o in self.outputs.items():
            a = o.agreement
            what = (f"argmax agreement {a:.1%}" if a is not None else
                    f"SQNR {o.sqnr_db:.1f} dB")
            parts.append(f"{name!r} {what}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        return {name: {"agreement": o.agreement, "sqnr_db": round(o.sqnr_db, 2)}
                for name, o in self.outputs.items()}


def measure(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]],
            names: list[str], axes: dict[str, int | None]) -> Agreement:
    """Agreement of `outputs` with `reference` (per batch, one array per output name)."""
    result = Agreement({n: OutputAgreement(axes.get(n)) for n in names})
    for ref_batch, got_batch in zip(reference, outputs):
        for name, ref, got in zip(names, ref_batch, got_batch):
            result.outputs[name].update(np.asarray(ref), np.asarray(got))
        result.samples += int(np.asarray(ref_batch[0]).shape[0]) if ref_batch else 0
    return result
