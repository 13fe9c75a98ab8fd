"""Insertion: apply a placement plan to a prepared float model, writing true
QuantizeLinear -> DequantizeLinear pairs (each placement's precision scheme: TensorRT's INT8,
zero point 0, by default) with onnx-graphsurgeon."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.files.metadata import PLAN_KEY, RULE_KEY, SCALES_KEY, WEIGHT_BITS_KEY, set_metadata
from qdq_onnx.files.onnx_files import MIN_OPSET, default_opset, skeleton
from qdq_onnx.files.runtime import readable_ir_version
from qdq_onnx.graph.names import FreshNames
from qdq_onnx.graph.weights import require_finite_weights
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.quantize.fp8_files import FP8_OPSET, bias_of, flatten_squeezes, headroom_bits
from qdq_onnx.quantize.scales import MIN_SCALE, PLACEHOLDER_AMAX, amax_to_scale, weight_scale
from qdq_onnx.types.scheme import DEFAULT_SCHEME, Scheme, scheme_named

# FP8 (float8e4m3fn) Q/DQ need opset 19; FP8 files are written at 21, which onnxruntime
# runs at its default optimization level (fp8_files.py: why).
FLOAT_QDQ_OPSET = FP8_OPSET


@dataclass
class InsertReport:
    """What insertion did: Q/DQ pairs inserted, placeholder scales, all-zero weight
    channels."""

    activation_pairs: int = 0
    weight_pairs: int = 0
    placeholder_scales: list[str] = field(default_factory=list)
    zero_weight_channels: dict[str, int] = field(default_factory=dict)
    fp8_headroom: dict[str, int] = field(default_factory=dict)  # weight -> power of two
    flattened: list[str] = field(default_factory=list)  # Squeezes written as Flatten

    def lines(self) -> list[str]:
        """The report as note lines for the CLI."""
        out = [f"inserted {self.activation_pairs} activation and {self.weight_pairs} weight "
               "Q/DQ pairs"]
        if self.placeholder_scales:
            out.append(f"{len(self.placeholder_scales)} activation scale(s) are placeholders "
                       f"(amax={PLACEHOLDER_AMAX}): calibrate (insert --calib DATA, or "
                       "qdq-onnx calibrate) for real scales")
        for name, n in self.zero_weight_channels.items():
            out.append(f"weight {name}: {n} all-zero channel(s) got the minimum scale")
        if self.fp8_headroom:
            out.append(f"FP8 weight scale(s) of {len(self.fp8_headroom)} layer(s) raised by a "
                       "power of two so onnxruntime's int32 bias rewrite stays in FP16 range")
        if self.flattened:
            out.append(f"{len(self.flattened)} Squeeze(s) before FP8 Q/DQ written as Flatten "
                       "(onnxruntime has no FP8 Squeeze)")
        return out


def _pair(names: FreshNames, src: gs.Tensor, scale: np.ndarray, axis: int | None,
          label: str, rule: str, provenance: dict[str, str], scheme: Scheme,
          retyped: dict[str, int]) -> tuple[list[gs.Node], gs.Variable]:
    zp = np.zeros(scale.shape, dtype=scheme.zero_point_dtype)
    s_const = gs.Constant(names(f"{label}_scale"), scale.astype(np.float32))
    z_const = gs.Constant(names(f"{label}_zero_point"), zp)
    attrs = {"axis": int(axis)} if axis is not None else {}
    q_out = gs.Variable(names(f"{label}_quantized"), dtype=scheme.zero_point_dtype)
    dq_out = gs.Variable(names(f"{label}_dequantized"), dtype=np.float32)
    q = gs.Node("QuantizeLinear", names(f"{label}_QuantizeLinear"), dict(attrs),
                [src, s_const, z_const], [q_out])
    dq = gs.Node("DequantizeLinear", names(f"{label}_DequantizeLinear"), dict(attrs),
                 [q_out, s_const, z_const], [dq_out])
    provenance[q.name] = rule
    provenance[dq.name] = rule
    if scheme.is_float:  # numpy has no FP8: uint8 zeros, retyped after export
        retyped[z_const.name] = retyped[q_out.name] = scheme.element_type
    return [q, dq], dq_out


def _retype_float_zero_points(model: onnx.ModelProto, typed: dict[str, int]) -> None:
    """Give the FP8 pairs' zero points and quantized tensors their ONNX element type."""
    if not typed:
        return
    for t in model.graph.initializer:
        if t.name in typed:
            t.data_type = typed[t.name]
    for vi in model.graph.value_info:
        if vi.name in typed:
            vi.type.tensor_type.elem_type = typed[vi.name]


def insert_qdq(model: onnx.ModelProto, plan: PlacementPlan,
               activation_amax: dict[str, float] | None = None,
               scale_source: str = "", in_place: bool = False, check_weights: bool = False
               ) -> tuple[onnx.ModelProto, InsertReport]:
    """Return the model with the plan's Q/DQ pairs, each in its placement's scheme.
    `activation_amax` maps a scale key (scale group, else tensor name) to its calibrated
    max |x|; missing keys get the placeholder range and are reported. `model` is copied
    first unless `in_place`. `check_weights`: refuse NaN/Inf weights (QdqError) for a
    caller that prepared the model without that check; the weights it scales are checked
    by their scales, not read again."""
    if default_opset(model) < MIN_OPSET:
        raise QdqError(f"insertion needs opset >= {MIN_OPSET}; prepare the model first")
    floats = any(p.quantization.is_float for p in plan.placements)
    if floats and default_opset(model) < FLOAT_QDQ_OPSET:
        from qdq_onnx.graph.opset import upgrade_opset

        model, in_place = upgrade_opset(model, FLOAT_QDQ_OPSET, in_place=in_place), True
    if not in_place:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        model = work
    report = InsertReport()
    # onnx-graphsurgeon edits a weightless skeleton: the weights never pass through it.
    edit = _Edit(gs.import_onnx(skeleton(model)))
    _insert_activations(edit, plan, activation_amax or {}, report)
    initializers = {t.name: t for t in model.graph.initializer}
    finite = _insert_weights(edit, plan, initializers, report)
    if check_weights:
        require_finite_weights(model, finite=finite)
    edit.graph.cleanup().toposort()
    _merge_into(model, gs.export_onnx(edit.graph, do_type_check=False))
    _retype_float_zero_points(model, edit.retyped)
    if edit.float8_q:
        report.flattened = flatten_squeezes(model, edit.float8_q)
    for node in model.graph.node:
        rule = edit.provenance.get(node.name)
        if rule is not None:
            node.metadata_props.add(key=RULE_KEY, value=rule)
    set_metadata(model, PLAN_KEY, plan.to_json())
    set_metadata(model, SCALES_KEY, scale_source or (
        "placeholder" if report.placeholder_scales else "given"))
    set_metadata(model, WEIGHT_BITS_KEY, weight_bits_record(plan))
    return model, report


def weight_bits_record(plan: PlacementPlan) -> str:
    """The file's `weight_bits` record: the bits of the weights' range (kept for readers
    of files from before plans named schemes)."""
    bits = sorted({p.quantization.bits for p in plan.weights()
                   if not p.quantization.is_float})
    if not bits:
        bits = [scheme_named(DEFAULT_SCHEME).bits]
    return ",".join(map(str, bits))


class _Edit:
    """The graph being edited, its tensors and nodes by name, fresh names, provenance."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.tensors = graph.tensors()
        self.nodes = {n.name: n for n in graph.nodes}
        self.names = FreshNames({n.name for n in graph.nodes} | set(self.tensors))
        self.provenance: dict[str, str] = {}
        self.retyped: dict[str, int] = {}  # FP8 zero points and quantized tensors
        self.float8_q: set[str] = set()  # the FP8 QuantizeLinear nodes
        self.input_scales: dict[tuple[str, int], float] = {}  # (consumer, input) -> scale

    def slot(self, consumer: str, index: int) -> gs.Node:
        node = self.nodes.get(consumer)
        if node is None or index >= len(node.inputs):
            raise QdqError(f"the plan names {consumer}[{index}], which is not in the graph")
        return node

    def pair(self, src: gs.Tensor, scale: np.ndarray, axis: int | None, label: str,
             rule: str, scheme: Scheme) -> gs.Variable:
        new_nodes, dq_out = _pair(self.names, src, scale, axis, label, rule, self.provenance,
                                  scheme, self.retyped)
        self.graph.nodes.extend(new_nodes)
        if scheme.is_float:
            self.float8_q.add(new_nodes[0].name)
        return dq_out


def _insert_activations(edit: _Edit, plan: PlacementPlan, amax: dict[str, float],
                        report: InsertReport) -> None:
    """One per-tensor Q/DQ pair per activation tensor, shared by its planned consumers."""
    by_tensor: dict[str, list] = {}
    for p in plan.activations():
        by_tensor.setdefault(p.tensor, []).append(p)
    for tensor_name, group in by_tensor.items():
        src = edit.tensors.get(tensor_name)
        if src is None:
            raise QdqError(f"the plan names tensor {tensor_name!r}, which is not in the graph")
        key = group[0].scale_group or tensor_name
        if key in amax:
            value = float(amax[key])
        else:
            value = PLACEHOLDER_AMAX
            report.placeholder_scales.append(key)
        scheme = group[0].quantization
        scale, _ = amax_to_scale(np.float32(value), scheme)
        rule_ids = ",".join(dict.fromkeys(p.rule for p in group))
        dq_out = edit.pair(src, scale, None, tensor_name, rule_ids, scheme)
        for p in group:
            edit.slot(p.consumer, p.input).inputs[p.input] = dq_out
            edit.input_scales[(p.consumer, p.input)] = float(np.max(scale))
        report.activation_pairs += 1


def _insert_weights(edit: _Edit, plan: PlacementPlan,
                    initializers: dict[str, onnx.TensorProto], report: InsertReport
                    ) -> dict[str, bool]:
    """A per-channel Q/DQ pair per weight slot (weights are un-shared by prepare). Returns
    which weights are finite: a NaN or Inf makes a max |w|, so a scale, non-finite."""
    finite: dict[str, bool] = {}
    for p in plan.weights():
        node = edit.slot(p.consumer, p.input)
        src = node.inputs[p.input]
        proto = initializers.get(src.name)
        if not isinstance(src, gs.Constant) or proto is None:
            raise QdqError(f"{p.consumer}: weight input {p.input} ({p.tensor}) is not a "
                           "constant initializer")
        values = numpy_helper.to_array(proto).astype(np.float32, copy=False)
        scheme = p.quantization
        scale = weight_scale(values, p.axis, scheme.qmax).reshape(-1)
        finite[src.name] = bool(np.isfinite(scale).all())
        if scheme.is_float:  # fp8_files.py, 3: room for onnxruntime's int32 bias
            bits = headroom_bits(bias_of(node, initializers),
                                 edit.input_scales.get((p.consumer, 0)), float(scale.max()))
            if bits:
                scale = (scale * np.float32(2.0 ** bits)).astype(np.float32)
                report.fp8_headroom[p.tensor] = bits
        zeros = int(np.count_nonzero(scale == MIN_SCALE))
        if zeros:
            report.zero_weight_channels[p.tensor] = zeros
        node.inputs[p.input] = edit.pair(src, scale, p.axis, p.tensor, p.rule, scheme)
        report.weight_pairs += 1
    return finite


def _merge_into(model: onnx.ModelProto, edited: onnx.ModelProto) -> None:
    """Put the edited graph structure into `model`, keeping its weight protos in place."""
    g = model.graph
    del g.node[:]
    g.node.extend(edited.graph.node)
    used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
    for i in reversed(range(len(g.initializer))):
        if g.initializer[i].name not in used:
            del g.initializer[i]
    have = {t.name for t in g.initializer}
    g.initializer.extend(t for t in edited.graph.initializer if t.name not in have)
    model.ir_version = readable_ir_version(model.ir_version or onnx.IR_VERSION)
    model.producer_name = "qdq-onnx"
    model.producer_version = _version()


def _version() -> str:
    from qdq_onnx.version import __version__

    return __version__
