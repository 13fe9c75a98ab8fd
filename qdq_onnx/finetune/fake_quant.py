"""Lowering a Q/DQ graph to a trainable fake-quant graph built from standard ONNX ops.

onnxruntime-training cannot differentiate QuantizeLinear/DequantizeLinear (and its FakeQuant
rewrite is per-tensor only, with fixed scales). Each Q->DQ pair becomes

    y = Clip((x / s) + M - M, lo, hi) * s,    M = 1.5 * 2**23

which in float32 rounds half to even exactly like QuantizeLinear (for |x/s| < 2**22) and
saturates like it, so the forward pass is bit-identical to the Q/DQ graph. Backward: Add/Sub
pass the gradient straight through, Clip zeroes it outside the range, and Div/Mul give the
scale the LSQ gradient when the scale is trained. Weight scales are frozen parameters that
the trainer recomputes from the weights after every step (per channel, max|w| / qmax, as
TensorRT will compute them at export). The clip range [lo, hi] and qmax are the pair's
precision scheme's (the placement plan's, see `qdq_onnx.quantize.schemes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.lowering_gather import TAG
from qdq_onnx.finetune.lowering_pass import Lowering
from qdq_onnx.graph.batch import relax_batch
from qdq_onnx.graph.batchnorm import batchnorm_affine
from qdq_onnx.graph.index import GraphIndex, attribute, upstream
from qdq_onnx.graph.ops import WEIGHTED_OPS
from qdq_onnx.graph.qdq import qdq_pairs
from qdq_onnx.graph.shapes import distinct_unknowns, specialised
from qdq_onnx.quantize.scales import weight_scale
from qdq_onnx.quantize.schemes import pair_schemes
from qdq_onnx.types.scheme import Scheme

ROUNDER = np.float32(1.5 * 2**23)
PREFIX = "qdq_onnx_fq"


@dataclass
class WeightQuant:
    weight: str  # trainable weight initializer
    scale: str  # the Q/DQ model's scale initializer ([K]), updated at export
    train_scale: str  # frozen parameter in the training graph (broadcast shape)
    axis: int | None  # None: a per-tensor weight scale
    scheme: Scheme

    @property
    def qmax(self) -> int:
        return self.scheme.qmax


@dataclass
class TrainGraph:
    model: onnx.ModelProto
    trainable: list[str]
    frozen: list[str]
    weights: list[WeightQuant] = field(default_factory=list)
    activation_scales: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # the model's (the loss adds labels)
    # original node name -> the node, for the ops rewritten for training (lowering.py)
    lowered: dict[str, onnx.NodeProto] = field(default_factory=dict)
    # initializers only the original ops read (not in the training graph)
    lowered_constants: list[onnx.TensorProto] = field(default_factory=list)

    @property
    def output(self) -> str:
        """The first output (a single-output model's only one)."""
        return self.outputs[0]

    @property
    def weight_bits(self) -> int | list[int] | None:
        """The bits of the weights' range (one number when all weights share it)."""
        bits = sorted({w.scheme.bits for w in self.weights})
        return bits[0] if len(bits) == 1 else (bits or None)

    def schemes(self) -> dict[str, str]:
        """Quantized weight -> scheme name (part of what is trained)."""
        return {w.weight: w.scheme.name for w in self.weights}


def _const(graph: onnx.GraphProto, name: str, value) -> str:
    graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name


def lower_to_fake_quant(qdq_model: onnx.ModelProto, learn_scales: bool = False,
                        weight_bits: int | None = None,
                        input_dims: dict[str, tuple[int, ...]] | None = None,
                        lower: bool = True) -> TrainGraph:
    """The training graph of a Q/DQ model (not modified), at any batch size; `input_dims`
    (the data's shapes by input name) fixes the other symbolic sizes, which rewrites need
    (else ShapesNeeded). `weight_bits` (deprecated) narrows every weight's range. `lower`:
    rewrite the ops onnxruntime-training cannot differentiate (lowering*.py; torch trains
    them as they are)."""
    model = distinct_unknowns(relax_batch(qdq_model))
    if input_dims:
        model = specialised(model, input_dims)
    graph = model.graph
    index = GraphIndex(graph)
    pairs = qdq_pairs(model)
    schemes = pair_schemes(qdq_model, pairs, index)
    m = _const(graph, f"{PREFIX}_rounder", ROUNDER)
    bounds = _Bounds(graph)
    drop = {p.quantize for p in pairs} | {p.dequantize for p in pairs}
    new_nodes: list[onnx.NodeProto] = []
    result = TrainGraph(model, [], [])
    seen_weights: set[str] = set()
    for k, p in enumerate(pairs):
        tag = f"{PREFIX}_{k}"
        if p.is_weight:
            scheme = schemes[p.source]
            if weight_bits is not None:
                scheme = scheme.with_bits(weight_bits)
            wq = _weight_quant(p, index, scheme, tag, seen_weights)
            s = wq.train_scale
            lo, hi = bounds.of("w", scheme)
            result.weights.append(wq)
        else:
            s = p.scale
            lo, hi = bounds.of("a", schemes[p.source])
            if s not in result.activation_scales:
                result.activation_scales.append(s)
        if schemes[p.source].is_float:
            new_nodes += _fake_quant_float_nodes(tag, p.source, s, m, lo, hi, p.output,
                                                 bounds)
        else:
            new_nodes += _fake_quant_nodes(tag, p.source, s, m, lo, hi, p.output)
    lowering = Lowering(model, [n for n in graph.node if n.name not in drop] if lower else [])
    kept = [x for n in graph.node if n.name not in drop
            for x in (lowering.nodes(n, _inference_form(n, index, graph)) if lower
                      else _inference_form(n, index, graph))]
    result.lowered = {**lowering.originals, **_frozen_batchnorms(index)}
    del graph.node[:]
    graph.node.extend(_toposort(kept + new_nodes, graph))
    _prune_initializers(result)
    result.outputs = [o.name for o in graph.output]
    result.inputs = [i.name for i in graph.input]
    _choose_parameters(result, GraphIndex(graph), learn_scales, lowering.weights)
    return result


def _weight_quant(p, index: GraphIndex, scheme: Scheme, tag: str, seen: set[str]
                  ) -> WeightQuant:
    """The weight of pair `p` with its training-graph scale (a frozen parameter, added)."""
    dq = index.by_name[p.dequantize]
    w = index.constant_value(p.source)
    if w is None or p.source not in index.initializers:
        raise QdqError(f"weight {p.source!r} is not an initializer")
    if p.source in seen:
        raise QdqError(f"weight {p.source!r} is quantized twice; un-share it first")
    seen.add(p.source)
    scale_size = int(np.prod(index.constant_shape(p.scale) or (1,)))
    axis = attribute(dq, "axis", 1) % w.ndim if scale_size > 1 else None
    s = _const(index.graph, f"{tag}_wscale", weight_scale(w.astype(np.float32), axis,
                                                          scheme.qmax))
    return WeightQuant(p.source, p.scale, s, axis, scheme)


def _fake_quant_nodes(tag: str, source: str, scale: str, rounder: str, lo: str, hi: str,
                      output: str) -> list[onnx.NodeProto]:
    """Clip((x / s) + M - M, lo, hi) * s, writing `output`."""
    return [
        helper.make_node("Div", [source, scale], [f"{tag}_div"], name=f"{tag}_div"),
        helper.make_node("Add", [f"{tag}_div", rounder], [f"{tag}_add"], name=f"{tag}_add"),
        helper.make_node("Sub", [f"{tag}_add", rounder], [f"{tag}_round"], name=f"{tag}_round"),
        helper.make_node("Clip", [f"{tag}_round", lo, hi], [f"{tag}_clip"], name=f"{tag}_clip"),
        helper.make_node("Mul", [f"{tag}_clip", scale], [output], name=f"{tag}_scale"),
    ]


# FP8 E4M3: exponents -6 (the subnormal range) to 8, 3 mantissa bits.
_FP8_MIN_EXPONENT, _FP8_MAX_EXPONENT, _FP8_MANTISSA = -6, 8, 3


def _fake_quant_float_nodes(tag: str, source: str, scale: str, rounder: str, lo: str,
                            hi: str, output: str, bounds: _Bounds) -> list[onnx.NodeProto]:
    """FP8 E4M3 fake quantization from ops onnxruntime-training differentiates:
    v = x / s; e = -6 + sum_k [|v| >= 2**k] (k = -5..8: the exponent, clipped to E4M3's
    range, from comparisons, so no gradient flows into it); step q = 2**(e - 3);
    y = Clip(((v / q) + M - M) * q, -448, 448) * s. v / q is exact (q is a power of two) and
    the rounder rounds it half to even, so the forward pass is bit-identical to
    QuantizeLinear/DequantizeLinear(float8e4m3fn, saturate); the gradient passes straight
    through inside the range, as for INT8."""
    c = bounds.constant
    nodes = [helper.make_node("Div", [source, scale], [f"{tag}_v"], name=f"{tag}_div"),
             helper.make_node("Abs", [f"{tag}_v"], [f"{tag}_abs"], name=f"{tag}_abs")]
    steps = []
    for k in range(_FP8_MIN_EXPONENT + 1, _FP8_MAX_EXPONENT + 1):
        ge, step = f"{tag}_ge{k + 6}", f"{tag}_step{k + 6}"
        nodes += [helper.make_node("GreaterOrEqual", [f"{tag}_abs", c(f"pow2_{k + 6}", 2.0 ** k)],
                                   [ge], name=ge),
                  helper.make_node("Cast", [ge], [step], name=step, to=onnx.TensorProto.FLOAT)]
        steps.append(step)
    low = float(_FP8_MIN_EXPONENT - _FP8_MANTISSA)
    nodes += [
        helper.make_node("Sum", steps, [f"{tag}_count"], name=f"{tag}_count"),
        helper.make_node("Add", [f"{tag}_count", c("fp8_low", low)], [f"{tag}_e"],
                         name=f"{tag}_e"),
        helper.make_node("Pow", [c("two", 2.0), f"{tag}_e"], [f"{tag}_q"], name=f"{tag}_q"),
        helper.make_node("Div", [f"{tag}_v", f"{tag}_q"], [f"{tag}_vq"], name=f"{tag}_vq"),
        helper.make_node("Add", [f"{tag}_vq", rounder], [f"{tag}_add"], name=f"{tag}_add"),
        helper.make_node("Sub", [f"{tag}_add", rounder], [f"{tag}_round"],
                         name=f"{tag}_round"),
        helper.make_node("Mul", [f"{tag}_round", f"{tag}_q"], [f"{tag}_grid"],
                         name=f"{tag}_grid"),
        helper.make_node("Clip", [f"{tag}_grid", lo, hi], [f"{tag}_clip"], name=f"{tag}_clip"),
        helper.make_node("Mul", [f"{tag}_clip", scale], [output], name=f"{tag}_scale"),
    ]
    return nodes


def _prune_initializers(result: TrainGraph) -> None:
    """Drop the initializers no node reads. What only a rewritten op read (a Resize's
    scales) is kept aside: the inference form (emit.fake_quant_model) puts it back with the
    op."""
    graph = result.model.graph
    used = {t for n in graph.node for t in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    restored = {t for n in result.lowered.values() for t in n.input} - used
    result.lowered_constants = [t for t in graph.initializer if t.name in restored]
    del graph.initializer[:]
    graph.initializer.extend(keep)


class _Bounds:
    """The clip-range constants of the training graph, one pair per role and scheme."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph, self.made = graph, {}

    def constant(self, name: str, value: float) -> str:
        """A shared FP32 scalar of the training graph."""
        key = ("const", name)
        if key not in self.made:
            self.made[key] = _const(self.graph, f"{PREFIX}_{name}", np.float32(value))
        return self.made[key]

    def of(self, role: str, scheme: Scheme) -> tuple[str, str]:
        key = (role, scheme.name)
        if key not in self.made:
            tag = f"{PREFIX}_{role}_{scheme.name.replace('-', '_')}"
            self.made[key] = (_const(self.graph, f"{tag}_lo", float(scheme.qmin)),
                              _const(self.graph, f"{tag}_hi", float(scheme.qmax)))
        return self.made[key]


def _inference_form(node: onnx.NodeProto, index: GraphIndex,
                    graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Dropout becomes Identity; a BatchNormalization left in the graph becomes a frozen
    per-channel Mul+Add (inference statistics), so training never updates BN statistics; a
    LayerNormalization gets the outputs its gradient needs."""
    if node.op_type == "Dropout":
        return [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)]
    if node.op_type == "LayerNormalization" and (len(node.output) < 3 or len(node.input) < 3):
        # onnxruntime-training's LayerNormalizationGrad reads the optional Mean and
        # InvStdDev outputs and the optional bias; the emitted model keeps the op as it was.
        full = onnx.NodeProto()
        full.CopyFrom(node)
        while len(full.output) < 3:
            full.output.append(f"{node.name}__{('', 'mean', 'inv_std_dev')[len(full.output)]}")
        scale = index.initializers.get(node.input[1])
        if len(full.input) < 3 and scale is not None:
            full.input.append(_const(graph, f"{node.name}__zero_bias",
                                     np.zeros(tuple(scale.dims), np.float32)))
        return [full]
    if node.op_type in _RECURRENT:
        return [_default_activations_dropped(node)]
    if node.op_type != "BatchNormalization":
        return [node]
    affine = batchnorm_affine(index, node)
    if affine is None:
        raise QdqError(f"{node.name}: BatchNormalization with non-constant statistics")
    # [C, 1, ...] broadcasts over [N, C, ...] of the input's rank (4 where not recorded)
    shape = (-1,) + (1,) * (_rank(graph, node.input[0]) - 2)
    tag = f"{node.name}{TAG}"  # a rewrite: the inference form puts the BatchNormalization back
    mul = _const(graph, f"{tag}bn_scale", affine[0].reshape(shape))
    add = _const(graph, f"{tag}bn_shift", affine[1].reshape(shape))
    mid = f"{tag}bn_mid"
    return [helper.make_node("Mul", [node.input[0], mul], [mid], name=f"{tag}bn_mul"),
            helper.make_node("Add", [mid, add], [node.output[0]], name=f"{tag}bn_add")]


def _frozen_batchnorms(index: GraphIndex) -> dict[str, onnx.NodeProto]:
    """The BatchNormalizations `_inference_form` froze as Mul + Add (its gradient is wrong):
    rewrites whose original the inference form puts back."""
    return {n.name: n for n in index.nodes if n.op_type == "BatchNormalization"}


def _rank(graph: onnx.GraphProto, tensor: str) -> int:
    """The rank the graph records for `tensor` (value infos, inputs), else 4."""
    for vi in (*graph.value_info, *graph.input, *graph.output):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return max(2, len(vi.type.tensor_type.shape.dim))
    return 4


_RECURRENT = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}


def _default_activations_dropped(node: onnx.NodeProto) -> onnx.NodeProto:
    """An LSTM/GRU whose `activations` attribute spells out ONNX's defaults, without it:
    onnxruntime-training's LSTMGrad compares the names case-sensitively with "sigmoid" and
    refuses tf2onnx's "Sigmoid", though they mean the same."""
    acts = next((a for a in node.attribute if a.name == "activations"), None)
    if acts is None:
        return node
    names = [s.decode().lower() for s in acts.strings]
    default = _RECURRENT[node.op_type]
    direction = next((a.s.decode() for a in node.attribute if a.name == "direction"), "")
    if names != default * (2 if direction == "bidirectional" else 1):
        return node
    out = onnx.NodeProto()
    out.CopyFrom(node)
    keep = [a for a in out.attribute if a.name != "activations"]
    del out.attribute[:]
    out.attribute.extend(keep)
    return out


def _toposort(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Kahn's algorithm over tensor dependencies (nodes were appended out of order)."""
    from collections import deque

    producers = {o: i for i, n in enumerate(nodes) for o in n.output}
    pending = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        deps = {producers[t] for t in n.input if t in producers and producers[t] != i}
        pending[i] = len(deps)
        for d in deps:
            readers.setdefault(d, []).append(i)
    queue = deque(i for i, count in enumerate(pending) if count == 0)
    order: list[int] = []
    while queue:
        i = queue.popleft()
        order.append(i)
        for j in readers.get(i, ()):
            pending[j] -= 1
            if pending[j] == 0:
                queue.append(j)
    if len(order) != len(nodes):
        raise QdqError("the training graph has a cycle")
    return [nodes[i] for i in order]


def _choose_parameters(result: TrainGraph, index: GraphIndex, learn_scales: bool,
                       lowered_weights: list[str]) -> None:
    """Trainable: quantized weights, weights/biases of weighted ops and the bias Add after
    them, and activation scales when learned. Everything else is a frozen parameter."""
    trainable: list[str] = [w.weight for w in result.weights] + lowered_weights
    for node in index.nodes:
        if node.op_type in WEIGHTED_OPS:
            for t in node.input[1:]:
                # a rewrite's fixed kernel (an AveragePool as a depthwise Conv) is not a
                # weight: the inference form puts the original op back
                if t in index.initializers and (TAG not in t or t in lowered_weights):
                    trainable.append(t)
        if node.op_type == "Add":
            live = index.live_inputs(node)
            const = [t for t in node.input if t in index.initializers]
            producer = index.producer.get(node.input[live[0]]) if len(live) == 1 else None
            if const and producer is not None and producer.op_type in WEIGHTED_OPS:
                trainable.extend(const)
    if learn_scales:
        trainable.extend(result.activation_scales)
    floats = {t.name for t in index.graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT}
    trainable = [t for t in dict.fromkeys(trainable) if t in floats]
    result.trainable = trainable
    chosen = set(trainable)
    result.frozen = [t.name for t in index.graph.initializer if t.name not in chosen]


def freeze_unreached(result: TrainGraph, outputs: list[str]) -> None:
    """Freeze the trainable parameters no trained output depends on (an output without a
    loss: onnxruntime-training refuses a gradient it cannot reach)."""
    seen = upstream(GraphIndex(result.model.graph).producer, outputs)
    unreached = [t for t in result.trainable if t not in seen]
    if unreached:
        result.trainable = [t for t in result.trainable if t in seen]
        result.frozen = result.frozen + unreached
