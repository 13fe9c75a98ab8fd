"""The graph facts lint checks share: dequantized inputs, the weighted layers, the residual
branch walk of the placement rule (so policy and check agree), all computed once."""

from __future__ import annotations

import functools

import numpy as np
import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.attention import attention_products
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.qdq import Dequantized, dequantized
from qdq_onnx.graph.shapes import tensor_shapes
from qdq_onnx.placement.patterns import branch_path, weighted_branch
from qdq_onnx.placement.plan import USER_RULES
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.placement.slots import node_attrs
from qdq_onnx.quantize.schemes import zero_point_scheme
from qdq_onnx.types.scheme import SCHEMES, scheme_named, scheme_of_zero_point

TYPINGS = ("strong", "weak")


class LintContext:
    def __init__(self, model: onnx.ModelProto, rules: RuleSet) -> None:
        self.model, self.rules = model, rules
        self.index = GraphIndex(model.graph)
        self.weighted_ops = rules.weighted_ops()

    @functools.cached_property
    def float_by_plan(self) -> dict[str, tuple[str, str, frozenset[int]]]:
        """Node -> (rule id, reason, input indexes) of the slots the embedded plan left in
        the float remainder deliberately: by a rule of these rules' PTQ policy (the cost
        model, the accuracy guard), each with a measured reason, or by the user (a spec
        entry, a custom case), each with the entry that asked. Not lost coverage, so no
        finding; a slot the plan quantized but the graph has float is still one. {} for
        another tool's file."""
        import json

        from qdq_onnx.files.metadata import PLAN_KEY, get_metadata

        ids = {r.id for r in self.rules.cost} | (
            {self.rules.accuracy_guard.id} if self.rules.accuracy_guard else set())
        text = get_metadata(self.model, PLAN_KEY)
        try:
            left = json.loads(text).get("left_float", []) if text else []
        except (ValueError, AttributeError):
            return {}
        found: dict[str, tuple[str, str, frozenset[int]]] = {}
        for d in left:
            if not isinstance(d, dict) or "consumer" not in d or not isinstance(
                    d.get("rule"), str) or not (d["rule"] in ids or d["rule"].startswith(
                        USER_RULES)):
                continue
            rule, reason, inputs = found.get(d["consumer"], (d["rule"], d["reason"],
                                                             frozenset()))
            found[d["consumer"]] = (rule, reason, inputs | {d.get("input")})
        return found

    def float_by_plan_at(self, node: str, input_index: int) -> str | None:
        """The rule id that deliberately left input `input_index` of `node` float."""
        rule, _, inputs = self.float_by_plan.get(node, (None, None, frozenset()))
        return rule if input_index in inputs else None

    @functools.cached_property
    def element_types(self) -> dict[str, int]:
        """Tensor name -> ONNX element type (shape inference on a weightless view)."""
        from qdq_onnx.graph.element_types import element_types

        return element_types(self.model)

    @functools.cached_property
    def precisions(self) -> list:
        """Each compute op's precision in a strongly typed build (OpPrecision rows)."""
        from qdq_onnx.diagnostics.op_precision import op_precisions

        return op_precisions(self.model, self.weighted_ops)

    def shapes_of(self, tensors: list[str]) -> dict[str, list[int | None]]:
        """Shapes of `tensors` at batch 1 (None where not knowable); a model run only when
        shape inference cannot tell."""
        return tensor_shapes(self.model, tensors) if tensors else {}

    def dq(self, tensor: str) -> Dequantized | None:
        return dequantized(self.index, tensor)

    def zero_point(self, node: onnx.NodeProto) -> np.ndarray | None:
        """A Q/DQ node's zero point (an FP8 one as its bit patterns, 0 for +0.0)."""
        if len(node.input) > 2 and node.input[2]:
            t = self.index.initializers.get(node.input[2])
            if t is not None and scheme_of_zero_point(t.data_type) is not None \
                    and scheme_of_zero_point(t.data_type).is_float:
                return np.frombuffer(t.raw_data, np.uint8) if t.raw_data else \
                    np.asarray(t.int32_data, np.uint8)
            return self.index.constant_value(node.input[2])
        return None

    def zero_point_type(self, node: onnx.NodeProto) -> int | None:
        """The ONNX element type of a Q/DQ node's zero point (None without one)."""
        name = node.input[2] if len(node.input) > 2 else ""
        if name in self.index.initializers:
            return self.index.initializers[name].data_type
        zp = self.index.constant_value(name) if name else None
        return None if zp is None else onnx.helper.np_dtype_to_tensor_dtype(zp.dtype)

    @functools.cached_property
    def accepted_zero_point_types(self) -> frozenset[int]:
        """The quantized ONNX element types TensorRT takes: the rule file's schemes and the
        full-range schemes qdq-onnx knows (INT8, FP8 E4M3)."""
        names = {*self.rules.schemes(), *SCHEMES}
        return frozenset(scheme_named(name).element_type for name in names)

    def scheme_of(self, dq: onnx.NodeProto) -> str:
        """The precision scheme a DequantizeLinear's zero point says (TensorRT reads only
        the graph, not qdq-onnx's plan)."""
        return zero_point_scheme(self.index, dq).name

    def zp_ok(self, node: onnx.NodeProto) -> bool:
        """No zero point, or zeros of a type TensorRT quantizes to."""
        zp = self.zero_point(node)
        return zp is None or (self.zero_point_type(node) in self.accepted_zero_point_types
                              and not np.any(zp))

    def scale_count(self, node: onnx.NodeProto) -> int:
        return int(np.prod(self.index.constant_shape(node.input[1]) or (1,)))

    def qdq_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.index.nodes if n.op_type in ops.QDQ_OPS]

    def expected_axis(self, node: onnx.NodeProto, weight_rank: int) -> int | None:
        rule = self.rules.op_rule_for(node.op_type)
        if rule is None or rule.weight_axis is None or not weight_rank:
            return None
        return rule.weight_axis.resolve(node_attrs(node)) % weight_rank

    @functools.cached_property
    def weighted(self) -> list[dict]:
        """Every weighted op with a constant (possibly dequantized) weight, with its data DQ,
        weight DQ, weight axis and the axis the op rule expects."""
        rows = []
        for node in self.index.nodes:
            if node.op_type not in self.weighted_ops or len(node.input) < 2:
                continue
            data, weight = self.dq(node.input[0]), self.dq(node.input[1])
            if weight is None and not self.index.is_constant(node.input[1]):
                continue  # a float MatMul of two activations: not a weighted layer
            source = weight.source if weight is not None else node.input[1]
            shape = self.index.constant_shape(source) or ()
            axis = None
            if weight is not None and self.scale_count(weight.dq) > 1:
                axis = attribute(weight.dq, "axis", 1) % max(len(shape), 1)
            rows.append({"node": node, "data": data, "weight": weight, "axis": axis,
                         "expected": self.expected_axis(node, len(shape))})
        return rows

    def branch(self, tensor: str) -> tuple[str | None, bool]:
        """The residual placement rule's branch walk, through Q/DQ pairs."""
        return weighted_branch(self.index, self.rules, tensor, through_qdq=True)

    @functools.cached_property
    def fused_followers(self) -> frozenset[str]:
        """Ops that fuse into the weighted op before them: the taxonomy's followers, the
        residual Add ops, and constant affine ops when the residual rule walks through them."""
        from qdq_onnx.placement.patterns.residual import branch_options

        options = branch_options(self.rules)
        extra = ops.AFFINE_OPS if options["through_constant_affine"] else frozenset()
        return self.rules.fusible_followers | set(options["ops"]) | extra

    @functools.cached_property
    def attentions(self) -> list[tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]]:
        """(Softmax, the MatMul before it, the MatMul after it) of every attention."""
        return [(n, *found) for n in self.index.nodes if n.op_type == "Softmax"
                and (found := attention_products(self.index, n)) is not None]

    def branch_path(self, tensor: str, also_through: frozenset[str] = frozenset()
                    ) -> list[onnx.NodeProto]:
        """The residual rule's branch walk through Q/DQ pairs, as nodes (see branch_path)."""
        return branch_path(self.index, self.rules, tensor, True, also_through)[0]

    def constant_behind(self, tensor: str) -> bool:
        found = self.dq(tensor)
        return self.index.is_constant(tensor) or (
            found is not None and self.index.is_constant(found.source))


