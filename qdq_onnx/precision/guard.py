"""The range guard: which float ops stay FP32 when the remainder is typed FP16 or BF16.

The guards are rules of the rule file (`precision.guards`): activation ranges measured on
data (one streamed pass over the float graph behind the Q/DQ model, each tensor reduced to
max |x| inside onnxruntime), weights, reductions over many elements, and ops whose ONNX
definition has no reduced type. Each decision is a `KeptFP32` with the rule's id and
reason, recorded in the plan."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.element_types import element_types
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.qdq import qdq_pairs, strip_qdq
from qdq_onnx.placement.plan import KeptFP32
from qdq_onnx.placement.rules import PrecisionGuard, PrecisionPolicy
from qdq_onnx.precision.graph_types import FLOAT, OpTypes
from qdq_onnx.types.float_type import FloatType, as_fp32


def measure_ranges(model: onnx.ModelProto, data: Any, config: Any = None,
                   run: Any = None) -> dict[str, float]:
    """max |x| of every float tensor of the float graph behind `model` on `data` (the
    batches and sample limit of `config`, a CalibrationConfig; the ranks of `run`, a
    RunContext, share the data); a DequantizeLinear output gets its source's value."""
    from qdq_onnx.quantize.calibration import collect_stats

    plain = strip_qdq(model)
    types = element_types(plain)
    # Constants are not activations (the weight guards judge them). An exporter's Constant
    # node can be empty (paddle2onnx writes Resize's unused `roi` so): reducing an empty
    # tensor fails onnxruntime's session initialization with no message.
    index = GraphIndex(plain.graph)
    tensors = [o for n in plain.graph.node for o in n.output
               if o and types.get(o) == FLOAT and not index.is_constant(o)]
    tensors += [i.name for i in plain.graph.input if types.get(i.name) == FLOAT]
    stats = collect_stats(plain, tensors, data, config, with_hist=False, run=run)
    ranges = {t: float(s.amax) for t, s in stats.items()}
    for p in qdq_pairs(model):
        if p.source in ranges:
            ranges[p.output] = ranges[p.source]
    return ranges


class _Decisions:
    def __init__(self) -> None:
        self.kept: dict[str, KeptFP32] = {}

    def keep(self, node: onnx.NodeProto, guard: PrecisionGuard, reason: str,
             tensor: str | None = None, value: float | None = None) -> None:
        if node.op_type in ops.QDQ_OPS or node.name in self.kept:
            return  # a Q/DQ pair takes the precision of the ops around it
        self.kept[node.name] = KeptFP32(node.name, node.op_type, guard.id, reason, tensor,
                                        None if value is None else float(value))


def guard_decisions(model: onnx.ModelProto, kind: FloatType, policy: PrecisionPolicy,
                    ranges: dict[str, float] | None = None) -> list[KeptFP32]:
    """The nodes of the Q/DQ `model` that stay FP32 when its remainder is `kind`, by the
    policy's guards (activation guards only with measured `ranges`)."""
    if kind.is_fp32:
        return []
    index = GraphIndex(model.graph)
    types = element_types(model)
    found = _Decisions()
    peaks: dict[str, float] | None = None
    for guard in policy.guards_for(kind.name):
        if guard.kind.startswith("activation") and ranges:
            _activations(index, guard, kind, ranges, found)
        elif guard.kind.startswith("weight"):
            peaks = _weight_peaks(model, index) if peaks is None else peaks
            _weights(peaks, index, guard, kind, found)
        elif guard.kind == "reduction":
            _reductions(model, index, guard, found)
        elif guard.kind == "no_low_precision_type":
            op_types = OpTypes(model)
            for node in index.nodes:
                if node.op_type not in ops.QDQ_OPS and node.op_type != "Cast" and \
                        any(types.get(t) == FLOAT for t in [*node.input, *node.output]) \
                        and not op_types.takes(node, kind.elem_type, types):
                    found.keep(node, guard, guard.reason + (
                        " (a control-flow op: its subgraphs keep their own types)"
                        if node.op_type in ops.CONTROL_FLOW_OPS else ""))
    return list(found.kept.values())


def _activations(index: GraphIndex, guard: PrecisionGuard, kind: FloatType,
                 ranges: dict[str, float], found: _Decisions) -> None:
    for tensor, peak in ranges.items():
        over = guard.kind == "activation_max" and peak > guard.limit
        tiny = guard.kind == "activation_subnormal" and 0.0 < peak < kind.min_normal
        if not (over or tiny):
            continue
        why = f"{guard.reason} (observed max |x| {peak:.4g} on {tensor!r})"
        nodes = [index.producer.get(tensor), *(u.node for u in index.consumers.get(tensor, []))]
        for node in nodes:
            if node is not None:
                found.keep(node, guard, why, tensor, peak)


def _weight_peaks(model: onnx.ModelProto, index: GraphIndex) -> dict[str, float]:
    """max |w| of each FP32 initializer but the Q/DQ scales (external data unread)."""
    scales = {n.input[1] for n in index.nodes if n.op_type in ops.QDQ_OPS}
    read = [t for t in model.graph.initializer if t.data_type == FLOAT and
            t.name not in scales and t.data_location != onnx.TensorProto.EXTERNAL]
    return {t.name: _peak(t) for t in read}


def _peak(t: onnx.TensorProto) -> float:
    w = as_fp32(t)
    # the largest and smallest value: no |w| copy of a large weight
    return max(float(w.max()), -float(w.min())) if w.size else 0.0


def _weights(peaks: dict[str, float], index: GraphIndex, guard: PrecisionGuard,
             kind: FloatType, found: _Decisions) -> None:
    for name, peak in peaks.items():
        over = guard.kind == "weight_max" and peak > guard.limit
        tiny = guard.kind == "weight_subnormal" and 0.0 < peak < kind.min_normal
        if not (over or tiny):
            continue
        why = f"{guard.reason} (max |w| {peak:.4g} in {name!r})"
        for node in _readers(index, name):
            found.keep(node, guard, why, name, peak)


def _readers(index: GraphIndex, tensor: str) -> list[onnx.NodeProto]:
    """The ops that read `tensor`, looking through a weight's Q/DQ pair."""
    out = []
    for use in index.consumers.get(tensor, []):
        node = use.node
        if node.op_type in ops.QDQ_OPS:
            out += _readers(index, node.output[0])
        else:
            out.append(node)
    return out


def _reductions(model: onnx.ModelProto, index: GraphIndex, guard: PrecisionGuard,
                found: _Decisions) -> None:
    from qdq_onnx.graph.shapes import tensor_shapes

    nodes = [n for n in index.nodes if n.op_type in guard.ops]
    if not nodes:
        return
    shapes = tensor_shapes(model, [n.input[0] for n in nodes])
    for node in nodes:
        shape = shapes.get(node.input[0])
        if not shape or None in shape:
            continue
        count = _reduced_count(index, node, shape)
        if count > guard.limit:
            found.keep(node, guard, f"{guard.reason} ({count} elements)", node.input[0],
                       count)


def _reduced_count(index: GraphIndex, node: onnx.NodeProto, shape: list[int]) -> int:
    if node.op_type == "CumSum":
        axis = index.constant_value(node.input[1]) if len(node.input) > 1 else None
        return int(shape[int(np.asarray(axis).reshape(-1)[0])]) if axis is not None else 0
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = index.constant_value(node.input[1])
        axes = None if value is None else [int(a) for a in np.asarray(value).reshape(-1)]
    if not axes:
        if attribute(node, "noop_with_empty_axes", 0):
            return 0
        axes = range(len(shape))
    return int(np.prod([shape[a] for a in axes]))
