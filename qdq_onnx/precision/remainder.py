"""Typing the float remainder of a Q/DQ model: every op not kept FP32 by the range guard
runs in the reduced type (its float inputs, outputs and initializers, and the scales of the
Q/DQ pairs around it, so each DequantizeLinear outputs what its consumer reads). Casts
appear only where a tensor crosses between precisions: at the graph's inputs and outputs
(kept FP32 by default) and at the edges of FP32 islands. No Cast reads a Cast."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from qdq_onnx.files.metadata import CAST_KEY
from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.graph import ops
from qdq_onnx.graph.element_types import element_types
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.names import FreshNames
from qdq_onnx.graph.opset import upgrade_opset
from qdq_onnx.precision import qdq_values
from qdq_onnx.precision.graph_types import FLOAT, OpTypes
from qdq_onnx.precision.subgraphs import implicit_inputs, rename_implicit
from qdq_onnx.types.float_type import BF16, FloatType, as_fp32, store_into, stored

# Q/DQ with FP16/BF16 scales and inputs need opset 19; most ops take BF16 from opset 22.
NEEDED_OPSET = {"fp16": 19, "bf16": 22}


@dataclass
class TypingReport:
    """What typing the remainder did: the type, Casts added at the graph boundary and at
    FP32 islands, initializers converted, ops typed reduced and ops left FP32."""

    high_precision: str
    boundary_casts: int = 0
    island_casts: int = 0
    converted_initializers: int = 0
    reduced_ops: int = 0
    fp32_ops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as note lines for the CLI."""
        if self.high_precision == "fp32":
            return ["float remainder left FP32 (--high-precision fp32)"]
        return [f"float remainder typed {self.high_precision}: {self.reduced_ops} ops, "
                f"{self.converted_initializers} initializers; {len(self.fp32_ops)} op(s) kept "
                f"FP32 by the range guard; {self.boundary_casts} Cast(s) at the graph "
                f"boundary, {self.island_casts} at FP32 islands", *self.notes]


def type_remainder(model: onnx.ModelProto, kind: FloatType, kept: set[str] | frozenset[str],
                   keep_io_types: bool = True, in_place: bool = False
                   ) -> tuple[onnx.ModelProto, TypingReport]:
    """The Q/DQ `model` with its float remainder in `kind`, the nodes named in `kept`
    FP32, graph I/O FP32 when `keep_io_types`: a copy, or `model` itself when `in_place`
    (for a caller that owns it; no weight is then copied)."""
    report = TypingReport(kind.name)
    if kind.is_fp32:
        return (model if in_place else _copy(model)), report
    out, note = opset_for(model, kind, in_place=in_place)
    if out is model and not in_place:
        out = _copy(model)
    report.notes += [note] if note else []
    _Typer(out, kind, set(kept), keep_io_types, report).run()
    return out, report


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def opset_for(model: onnx.ModelProto, kind: FloatType, in_place: bool = False
              ) -> tuple[onnx.ModelProto, str | None]:
    """`model` at the opset a `kind` remainder needs (itself when it has it, or when
    `in_place`; else an upgraded copy), and a note."""
    need = NEEDED_OPSET.get(kind.name, 0)
    have = default_opset(model)
    if have >= need:
        return model, None
    why = "FP16 Q/DQ scales" if kind.name == "fp16" else "BF16 Conv, pooling and Q/DQ scales"
    return upgrade_opset(model, need, in_place=in_place), \
        f"opset {have} -> {need} ({why} need opset {need})"


class _Typer:
    def __init__(self, model: onnx.ModelProto, kind: FloatType, kept: set[str],
                 keep_io: bool, report: TypingReport) -> None:
        self.model, self.kind, self.kept, self.keep_io = model, kind, kept, keep_io
        self.report = report
        self.graph = model.graph
        self.index = GraphIndex(model.graph)
        self.types = element_types(model)
        self.op_types = OpTypes(model)
        self.low = kind.elem_type
        self.outputs = {o.name for o in self.graph.output}
        if _split_mixed_pairs(model, self.index, self._base_precisions()):
            self.index = GraphIndex(model.graph)
            self.types = element_types(model)
        self.scales = {n.input[1] for n in self.index.nodes if n.op_type in ops.QDQ_OPS}
        self.limits = qdq_values.scale_limits(self.index)  # pairs quantize as in FP32
        self.weights = qdq_values.weight_quantizers(self.index)
        self.precision = self._precisions()
        self.typed: dict[str, int] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self._fresh = FreshNames({o for n in self.index.nodes for o in n.output}
                                 | {i.name for i in self.graph.input}
                                 | set(self.index.initializers))

    # -- per-node precision -----------------------------------------------------------------
    def _base_precisions(self) -> dict[str, int]:
        """The precision of every op but Q/DQ, Cast and Constant (decided from their
        readers: a Constant only a fixed-FP32 slot reads, such as Resize's scales, stays
        FP32 rather than being typed and cast back)."""
        p: dict[str, int] = {}
        for node in self.index.nodes:
            if node.name in self.kept:
                p[node.name] = FLOAT
            elif node.op_type in ops.QDQ_OPS or node.op_type in ("Cast", "Constant"):
                continue
            elif self.op_types.takes(node, self.low, self.types):
                p[node.name] = self.low
            else:
                p[node.name] = FLOAT
        return p

    def _precisions(self) -> dict[str, int]:
        p = self._base_precisions()
        for node in reversed(self.index.nodes):  # consumers first: DQ, then its Q
            if node.name in p:
                continue
            if node.op_type == ops.QUANTIZE:
                wants = [p.get(u.node.name, self.low) for u in self._uses(node.output[0])]
            else:
                wants = [self._wanted_by(u.node, u.index, p) for u in self._uses(node.output[0])]
                if node.output[0] in self.outputs and self.keep_io:
                    wants.append(FLOAT)
            p[node.name] = self.low if not wants or self.low in wants else FLOAT
        return p

    def _wanted_by(self, node: onnx.NodeProto, index: int, p: dict[str, int]) -> int:
        if node.op_type == "Cast":
            return self.low  # a Cast reads any type
        if not self.op_types.convertible(node, index, self.low):
            return FLOAT
        return p.get(node.name, self.low)

    def _uses(self, tensor: str):
        return self.index.consumers.get(tensor, [])

    # -- rewriting --------------------------------------------------------------------------
    def run(self) -> None:
        for i in self.graph.input:
            if self.types.get(i.name) == FLOAT and i.name not in self.index.initializers:
                self.typed[i.name] = FLOAT if self.keep_io else self.low
                if not self.keep_io:
                    i.type.tensor_type.elem_type = self.low
        self._initializers()
        nodes: list[onnx.NodeProto] = []
        for node in self.index.nodes:
            nodes += self._inputs_of(node)
            self._outputs_of(node)
            nodes.append(node)
        nodes += self._graph_outputs()
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        for vi in self.graph.value_info:
            if vi.name in self.typed:
                vi.type.tensor_type.elem_type = self.typed[vi.name]
        self.report.fp32_ops = sorted(
            n.name for n in self.index.nodes
            if self.precision.get(n.name) == FLOAT and n.op_type not in ops.QDQ_OPS
            and n.op_type not in ("Cast", "Constant") and self._computes_float(n))
        self.report.reduced_ops = sum(
            self.precision.get(n.name) == self.low for n in self.index.nodes)

    def _computes_float(self, node: onnx.NodeProto) -> bool:
        return any(self.types.get(t) == FLOAT for t in [*node.input, *node.output])

    def _initializers(self) -> None:
        """Each FP32 initializer in the type its readers want (a copy when they differ)."""
        wants: dict[str, set[int]] = {}
        for node in self.index.nodes:
            for i, t in enumerate(node.input):
                if t in self.index.initializers and self.types.get(t) == FLOAT:
                    wants.setdefault(t, set()).add(self._slot_type(node, i))
            for t in implicit_inputs(node) & set(self.index.initializers):
                wants.setdefault(t, set()).add(FLOAT)  # a subgraph keeps its FP32 reads
        renamed: dict[str, str] = {}
        for name, types in wants.items():
            if self.low not in types:
                continue
            typed = self._typed(name, types)
            proto = self.index.initializers[name]
            target = name
            if FLOAT in types:
                target = renamed[name] = self._fresh(f"{name}__{self.kind.name}")
                new = self.graph.initializer.add()
            else:
                new = proto
            store_into(new, typed, self.kind)
            new.name = target
            self.typed[target] = self.low
            self.report.converted_initializers += 1
        for node in self.index.nodes:
            for i, t in enumerate(node.input):
                if t in renamed and self._slot_type(node, i) == self.low:
                    node.input[i] = renamed[t]

    def _typed(self, name: str, types: set[int]) -> np.ndarray:
        """Initializer `name`'s values in the reduced type: a scale reduced so its pairs
        quantize as in FP32, a weight only its quantizer reads matched to it."""
        if name in self.weights and types == {self.low} and name not in self.scales:
            w = self.weights[name]
            return qdq_values.matched_weight(self.index, name, w, self.kind,
                                             self.limits.get(w.scale))
        values = as_fp32(self.index.initializers[name])
        if name in self.scales:
            values = qdq_values.reduced_scale(values, self.kind, self.limits.get(name))
        return values

    def _slot_type(self, node: onnx.NodeProto, index: int) -> int:
        if node.op_type == "Cast":
            return FLOAT
        if not self.op_types.convertible(node, index, self.low):
            return FLOAT
        return self.precision.get(node.name, FLOAT)

    def _inputs_of(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        added = self._implicit_inputs_of(node)
        for i, t in enumerate(node.input):
            if not t or t in self.index.initializers or node.op_type == "Cast":
                continue
            have = self.typed.get(t, self.types.get(t))
            if have not in (FLOAT, self.low):
                continue
            want = self._slot_type(node, i)
            if have != want:
                name, cast = self._cast(t, want)
                node.input[i] = name
                if cast is not None:
                    added.append(cast)
        return added

    def _implicit_inputs_of(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """FP32 Casts of the reduced outer tensors a control-flow op's subgraphs read."""
        added, renamed = [], {}
        for t in sorted(implicit_inputs(node)):
            if t in self.index.initializers or self.typed.get(t) != self.low:
                continue
            renamed[t], cast = self._cast(t, FLOAT)
            if cast is not None:
                added.append(cast)
        rename_implicit(node, renamed)
        return added

    def _outputs_of(self, node: onnx.NodeProto) -> None:
        p = self.precision.get(node.name, FLOAT)
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == FLOAT and p == self.low:
                to.i = self.low
            self.typed[node.output[0]] = to.i
            return
        if p != self.low:
            for out in node.output:
                if self.types.get(out) == FLOAT:
                    self.typed[out] = FLOAT
            return
        _convert_attributes(node, self.kind)
        for j, out in enumerate(node.output):
            if out and self.types.get(out) == FLOAT:
                ok = self.op_types.convertible(node, j, self.low, outputs=True) or \
                    node.op_type in ("Constant", "ConstantOfShape")
                self.typed[out] = self.low if ok else FLOAT

    def _cast(self, tensor: str, to: int) -> tuple[str, onnx.NodeProto | None]:
        """The name of `tensor` in type `to`, and the Cast to add (None when it exists).
        A tensor an existing Cast makes is re-made from that Cast's input, so no Cast reads
        a Cast."""
        key = (tensor, to)
        if key in self.casts:
            return self.casts[key], None
        source = tensor
        producer = self.index.producer.get(tensor)
        if producer is not None and producer.op_type == "Cast":
            source = producer.input[0]
        name = self._fresh(f"{tensor}__to_{'fp32' if to == FLOAT else self.kind.name}")
        where = "boundary" if source in self.typed and self.index.producer.get(source) is None \
            else "island"
        cast = helper.make_node("Cast", [source], [name], name=name, to=to)
        cast.metadata_props.add(key=CAST_KEY, value=where)
        if where == "boundary":
            self.report.boundary_casts += 1
        else:
            self.report.island_casts += 1
        self.casts[key] = name
        self.typed[name] = to
        return name, cast

    def _graph_outputs(self) -> list[onnx.NodeProto]:
        added = []
        for o in self.graph.output:
            have = self.typed.get(o.name)
            if have is None or self.types.get(o.name) != FLOAT:
                continue
            if not self.keep_io:
                o.type.tensor_type.elem_type = have
                continue
            if have == FLOAT:
                continue
            inner = self._fresh(f"{o.name}__{self.kind.name}")
            producer = self.index.producer[o.name]
            producer.output[list(producer.output).index(o.name)] = inner
            for use in self._uses(o.name):
                use.node.input[use.index] = inner
            cast = helper.make_node("Cast", [inner], [o.name], name=f"{o.name}__to_fp32",
                                    to=FLOAT)
            cast.metadata_props.add(key=CAST_KEY, value="boundary")
            self.report.boundary_casts += 1
            added.append(cast)
        return added


def _split_mixed_pairs(model: onnx.ModelProto, index: GraphIndex, base: dict[str, int]) -> bool:
    """A Q/DQ pair read by ops of both precisions gets a twin for its FP32 readers (its
    own FP32 scale), so every DequantizeLinear outputs what all its readers take and no Cast
    sits between a DQ and the op it fuses into. Whether anything was split."""
    graph, split = model.graph, False
    for dq in [n for n in index.nodes if n.op_type == ops.DEQUANTIZE]:
        q = index.producer.get(dq.input[0])
        if q is None or q.op_type != ops.QUANTIZE or q.input[1] not in index.initializers:
            continue
        uses = index.consumers.get(dq.output[0], [])
        wide = [u for u in uses if base.get(u.node.name) == FLOAT]
        if not wide or len(wide) == len(uses):
            continue
        scale = graph.initializer.add()
        scale.CopyFrom(index.initializers[q.input[1]])
        scale.name = f"{q.input[1]}__fp32"
        twin_q, twin_dq = onnx.NodeProto(), onnx.NodeProto()
        twin_q.CopyFrom(q)
        twin_dq.CopyFrom(dq)
        twin_q.name, twin_dq.name = f"{q.name}__fp32", f"{dq.name}__fp32"
        twin_q.input[1] = twin_dq.input[1] = scale.name
        twin_q.output[0] = twin_dq.input[0] = f"{q.output[0]}__fp32"
        twin_dq.output[0] = f"{dq.output[0]}__fp32"
        for use in wide:
            use.node.input[use.index] = twin_dq.output[0]
        at = list(graph.node).index(dq) + 1
        graph.node.insert(at, twin_dq)
        graph.node.insert(at, twin_q)
        split = True
    return split


def _convert_attributes(node: onnx.NodeProto, kind: FloatType) -> None:
    """FP32 constants and element types held in attributes, in `kind`."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
            a.t.CopyFrom(stored(as_fp32(a.t), a.t.name, kind))
        elif a.name in ("dtype", "to") and a.type == onnx.AttributeProto.INT and a.i == FLOAT:
            a.i = kind.elem_type
    if node.op_type == "Constant":
        for a in list(node.attribute):
            if a.name in ("value_float", "value_floats"):
                values = np.asarray(a.f if a.name == "value_float" else list(a.floats),
                                    np.float32)
                node.attribute.remove(a)
                node.attribute.append(helper.make_attribute("value", stored(values, "",
                                                                             kind)))


__all__ = ["BF16", "NEEDED_OPSET", "TypingReport", "type_remainder"]
