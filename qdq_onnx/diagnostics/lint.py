"""Static TensorRT-fusion check of any Q/DQ ONNX graph (ours, Model Optimizer's,
onnxruntime's): which weighted layers TensorRT can run in INT8 and which fusions the
placement breaks. The checks, their ids and severities come from the rule file, and the
expected weight axes and residual-branch walk come from its placement rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.graph.index import WEIGHTED_OPS, GraphIndex, attribute
from qdq_onnx.placement.patterns import weighted_branch
from qdq_onnx.placement.slots import node_attrs
from qdq_onnx.policy.rules import RuleSet

_REJECTED = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
_NEUTRAL = {"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Pad",
            "Slice", "Identity", "Concat", "Split", "Relu"}
_FUSES_INTO_WEIGHTED = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
                        "BatchNormalization", "Add", "Mul", "Elu", "Tanh"}


@dataclass
class Finding:
    id: str
    name: str
    severity: str
    node: str
    message: str


@dataclass
class LayerRow:
    node: str
    op_type: str
    int8: bool
    data_quantized: bool
    weight_quantized: bool
    axis: int | None
    expected_axis: int | None


@dataclass
class LintReport:
    layers: list[LayerRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def broken_fusions(self) -> list[Finding]:
        names = {"residual-weighted-branch-quantized", "residual-skip-not-quantized",
                 "qdq-on-weighted-output", "requantization"}
        return [f for f in self.findings if f.name in names]

    def summary(self) -> str:
        int8 = sum(r.int8 for r in self.layers)
        return (f"{int8} of {len(self.layers)} weighted layers INT8, "
                f"{len(self.broken_fusions)} fusions broken, {len(self.errors)} errors, "
                f"{len(self.findings) - len(self.errors)} warnings")

    def to_dict(self) -> dict:
        return {"summary": self.summary(),
                "weighted_layers": len(self.layers),
                "int8_layers": sum(r.int8 for r in self.layers),
                "broken_fusions": len(self.broken_fusions), "errors": len(self.errors),
                "layers": [asdict(r) for r in self.layers],
                "findings": [asdict(f) for f in self.findings]}


class _Linter:
    def __init__(self, model: onnx.ModelProto, rules: RuleSet) -> None:
        self.model, self.rules = model, rules
        self.index = GraphIndex(model.graph)
        self.report = LintReport()

    def add(self, name: str, node: str, message: str) -> None:
        rule = self.rules.lint.get(name)
        if rule is None:  # a rule file may switch a check off by leaving it out
            return
        self.report.findings.append(Finding(rule.id, name, rule.severity, node, message))

    def dq_of(self, tensor: str) -> onnx.NodeProto | None:
        node = self.index.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def source_of_dq(self, dq: onnx.NodeProto) -> str:
        """The float tensor behind a DQ: the Q's input, or the DQ's own int8 input."""
        q = self.index.producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]

    def run(self) -> LintReport:
        self.check_ops()
        self.check_quantize_nodes()
        for node in self.index.nodes:
            if node.op_type in WEIGHTED_OPS:
                self.check_weighted(node)
            if node.op_type in ("Add", "Sum"):
                self.check_residual(node)
        return self.report

    # -- checks ------------------------------------------------------------------------------
    def check_ops(self) -> None:
        for node in self.index.nodes:
            if node.op_type in _REJECTED:
                self.add("rejected-quantized-op", node.name,
                         f"{node.op_type} is not accepted by TensorRT")

    def check_quantize_nodes(self) -> None:
        opset = default_opset(self.model)
        for node in self.index.nodes:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            zp = self.index.constant_value(node.input[2]) if len(node.input) > 2 and \
                node.input[2] else None
            if zp is not None:
                if zp.dtype == np.uint8:
                    self.add("uint8-quantization", node.name, "uint8 zero point")
                if np.any(zp != 0):
                    self.add("nonzero-zero-point", node.name,
                             f"zero point {zp.reshape(-1)[:4].tolist()}")
            scale_shape = self.index.constant_shape(node.input[1]) or ()
            per_channel = int(np.prod(scale_shape)) > 1
            if per_channel and opset < 13:
                self.add("per-channel-needs-opset-13", node.name, f"opset {opset}")
            if node.op_type == "QuantizeLinear" and per_channel and \
                    not self.index.is_constant(node.input[0]):
                self.add("per-channel-activation", node.name,
                         f"activation {node.input[0]!r} has {int(np.prod(scale_shape))} scales")
            if node.op_type == "QuantizeLinear":
                self.check_requantization(node)
            if node.op_type == "DequantizeLinear":
                for use in self.index.consumers.get(node.output[0], ()):
                    if use.node.op_type in ("Conv", "ConvTranspose", "Gemm") and use.index == 2:
                        self.add("quantized-bias", use.node.name, "bias fed by DequantizeLinear")

    def expected_axis(self, node: onnx.NodeProto, weight_rank: int) -> int | None:
        rule = self.rules.op_rule_for(node.op_type)
        if rule is None or rule.weight_axis is None:
            return None
        axis = rule.weight_axis.resolve(node_attrs(node))
        return axis % weight_rank if weight_rank else None

    def check_weighted(self, node: onnx.NodeProto) -> None:
        if len(node.input) < 2:
            return
        data_dq = self.dq_of(node.input[0])
        weight_dq = self.dq_of(node.input[1])
        weight_src = self.source_of_dq(weight_dq) if weight_dq is not None else node.input[1]
        if not self.index.is_constant(weight_src) and weight_dq is None and \
                not self.index.is_constant(node.input[1]):
            return  # MatMul of two activations: not a weighted layer
        shape = self.index.constant_shape(weight_src) or ()
        expected = self.expected_axis(node, len(shape))
        axis, axis_ok = None, True
        if weight_dq is not None:
            scales = int(np.prod(self.index.constant_shape(weight_dq.input[1]) or (1,)))
            if scales > 1:
                axis = attribute(weight_dq, "axis", 1) % max(len(shape), 1)
                if expected is not None and axis != expected:
                    axis_ok = False
                    self.add("wrong-weight-axis", node.name,
                             f"weight axis {axis}, expected {expected} for {node.op_type}")
        if data_dq is None:
            self.add("weighted-data-not-quantized", node.name,
                     f"{node.op_type} data input {node.input[0]!r} is float")
        if weight_dq is None:
            self.add("weight-not-quantized", node.name, f"{node.op_type} weight is float")
        zp_ok = all(self._zp_ok(dq) for dq in (data_dq, weight_dq) if dq is not None)
        int8 = data_dq is not None and weight_dq is not None and axis_ok and zp_ok
        self.report.layers.append(LayerRow(node.name, node.op_type, int8, data_dq is not None,
                                           weight_dq is not None, axis, expected))
        self.check_output(node)

    def _zp_ok(self, dq: onnx.NodeProto) -> bool:
        if len(dq.input) < 3 or not dq.input[2]:
            return True
        zp = self.index.constant_value(dq.input[2])
        return zp is None or (zp.dtype == np.int8 and not np.any(zp))

    def check_output(self, node: onnx.NodeProto) -> None:
        for use in self.index.consumers.get(node.output[0], ()):
            if use.node.op_type != "QuantizeLinear":
                continue
            for dq_use in self.index.consumers.get(use.node.output[0], ()):
                for after in self.index.consumers.get(dq_use.node.output[0], ()):
                    if after.node.op_type in ("Add", "Sum") and self._is_skip_side(after):
                        continue  # the quantized skip input of a residual Add: intended
                    if after.node.op_type in _FUSES_INTO_WEIGHTED:
                        self.add("qdq-on-weighted-output", node.name,
                                 f"Q/DQ between {node.op_type} and {after.node.op_type} "
                                 f"{after.node.name!r}")

    def _is_skip_side(self, use) -> bool:
        """True if another input of this Add is an unquantized weighted branch (the one that
        fuses), so quantizing this input is what the residual rule asks for."""
        add = use.node
        for i, t in enumerate(add.input):
            if i == use.index or not t:
                continue
            weighted, quantized = self.weighted_branch(t)
            if weighted is not None and not quantized:
                return True
        return False

    def check_requantization(self, q: onnx.NodeProto) -> None:
        scale = self.index.constant_value(q.input[1])
        t, hops = q.input[0], 0
        while hops < 8:
            producer = self.index.producer.get(t)
            if producer is None:
                return
            if producer.op_type == "DequantizeLinear":
                if hops == 0:
                    return
                other = self.index.constant_value(producer.input[1])
                if scale is not None and other is not None and (
                        scale.shape != other.shape or not np.array_equal(scale, other)):
                    self.add("requantization", q.name,
                             f"re-quantized after {hops} precision-neutral op(s) with a "
                             "different scale")
                return
            if producer.op_type not in _NEUTRAL:
                return
            live = self.index.live_inputs(producer)
            if not live:
                return
            t, hops = producer.input[live[0]], hops + 1

    def weighted_branch(self, tensor: str) -> tuple[str | None, bool]:
        """The residual rule's branch walk (patterns.weighted_branch), through Q/DQ pairs."""
        pattern = self.rules.patterns.get("residual_add")
        options = pattern.options if pattern is not None else {
            "through": sorted(_FUSES_INTO_WEIGHTED), "through_constant_affine": True,
            "max_hops": 8}
        return weighted_branch(self.index, tensor, options, through_qdq=True)

    def _constant_behind(self, tensor: str) -> bool:
        dq = self.dq_of(tensor)
        return self.index.is_constant(tensor) or (
            dq is not None and self.index.is_constant(self.source_of_dq(dq)))

    def check_residual(self, node: onnx.NodeProto) -> None:
        consts = [i for i, t in enumerate(node.input) if t and self._constant_behind(t)]
        if consts:  # a bias Add; a dequantized constant there is a quantized bias
            for i in consts:
                if self.dq_of(node.input[i]) is not None:
                    self.add("quantized-bias", node.name,
                             f"bias {self.source_of_dq(self.dq_of(node.input[i]))!r} is "
                             "quantized")
            return
        live = self.index.live_inputs(node)
        if len(live) < 2:
            return
        branches = {i: self.weighted_branch(node.input[i]) for i in live}
        weighted = [i for i in live if branches[i][0] is not None]
        if not weighted:
            return
        fused = [i for i in weighted if not branches[i][1]]
        if not fused:
            self.add("residual-weighted-branch-quantized", node.name,
                     f"every weighted branch ({', '.join(branches[i][0] for i in weighted)}) "
                     "is quantized before the Add")
            return
        keep = fused[0]
        for i in live:
            if i != keep and self.dq_of(node.input[i]) is None:
                self.add("residual-skip-not-quantized", node.name,
                         f"input {i} ({node.input[i]!r}) is float")


def lint_model(model: onnx.ModelProto, rules: RuleSet) -> LintReport:
    return _Linter(model, rules).run()
