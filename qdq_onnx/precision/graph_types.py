"""What each op's ONNX definition allows its slots to hold (the element types of a graph's
tensors: `qdq_onnx.graph.element_types`)."""

from __future__ import annotations

import functools

import onnx

from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.graph import ops

FLOAT = onnx.TensorProto.FLOAT
_TYPE_STR = {onnx.TensorProto.FLOAT16: "tensor(float16)",
             onnx.TensorProto.BFLOAT16: "tensor(bfloat16)", FLOAT: "tensor(float)"}


@functools.lru_cache(maxsize=4096)
def _schema(op_type: str, domain: str, opset: int):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def _allowed(schema, type_str: str) -> frozenset[str] | None:
    for c in schema.type_constraints:
        if c.type_param_str == type_str:
            return frozenset(c.allowed_type_strs)
    return None  # a fixed type such as tensor(float)


class OpTypes:
    """What the ONNX definitions at one opset let each op slot hold."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.opset = default_opset(model)

    def schema(self, node: onnx.NodeProto):
        """The node's ONNX schema, or None (a custom-domain op)."""
        if node.domain not in ("", "ai.onnx"):
            return None
        return _schema(node.op_type, "", self.opset)

    def _formal(self, node: onnx.NodeProto, index: int, outputs: bool) -> str | None:
        schema = self.schema(node)
        if schema is None:
            return None
        formals = schema.outputs if outputs else schema.inputs
        if not formals:
            return None
        return formals[min(index, len(formals) - 1)].type_str

    def fixed_input(self, node: onnx.NodeProto, index: int) -> bool:
        """Whether input `index` of `node` has one fixed type by the op's definition (not a
        type parameter), such as Resize's scales; False for a custom-domain op."""
        formal = self._formal(node, index, False)
        schema = self.schema(node)
        return formal is not None and schema is not None and \
            formal not in {c.type_param_str for c in schema.type_constraints}

    def convertible(self, node: onnx.NodeProto, index: int, elem_type: int,
                    outputs: bool = False) -> bool:
        """Whether input (output) `index` of `node` may hold `elem_type` where it now holds
        FP32 (False for a slot fixed to tensor(float), such as Resize's scales)."""
        formal = self._formal(node, index, outputs)
        if formal is None:
            return False
        allowed = _allowed(self.schema(node), formal)
        return allowed is not None and _TYPE_STR[elem_type] in allowed

    def takes(self, node: onnx.NodeProto, elem_type: int, types: dict[str, int]) -> bool:
        """Whether every FP32 slot of `node` could hold `elem_type` (its definition has a
        reduced-precision variant; a control-flow op never: its subgraphs keep their types)."""
        if self.schema(node) is None or node.op_type in ops.CONTROL_FLOW_OPS:
            return False
        slots = [(i, False) for i, t in enumerate(node.input) if types.get(t) == FLOAT]
        slots += [(j, True) for j, t in enumerate(node.output) if types.get(t) == FLOAT]
        fixed = [s for s in slots if self._formal(node, s[0], s[1]) not in
                 {c.type_param_str for c in self.schema(node).type_constraints}]
        return all(self.convertible(node, i, elem_type, out) for i, out in slots
                   if (i, out) not in fixed) and len(fixed) < len(slots)
