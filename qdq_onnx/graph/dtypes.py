"""Which tensors are not floating point (integer ids, shapes, masks), found by a forward
pass over the element types the graph declares and each op's type rule: fast enough for
every plan, unlike full shape inference, which serialises the whole model."""

from __future__ import annotations

import onnx

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
          onnx.TensorProto.DOUBLE}
# Ops whose outputs are never floating point, whatever they read.
_NON_FLOAT_OUT = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Equal", "Less", "Greater",
                  "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
                  "IsInf", "TopK_indices"}
# Ops whose outputs have the element type of one input (its index).
_FOLLOWS = {**dict.fromkeys(
    ["Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Concat", "Gather",
     "GatherElements", "GatherND", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
     "Transpose", "Identity", "Expand", "Tile", "Split", "Pad", "Clip", "ReduceProd",
     "ReduceSum", "ReduceMax", "ReduceMin", "CumSum", "Range", "Sign", "ScatterND",
     "ScatterElements", "Relu"], 0), "Where": 1}


def non_float_tensors(graph: onnx.GraphProto) -> set[str]:
    """The tensors of `graph` whose element type is known and not floating point."""
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
        elif node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), 0)
            types[node.output[0]] = to
        elif node.op_type in _NON_FLOAT_OUT:
            types.update(dict.fromkeys(node.output, onnx.TensorProto.INT64))
        elif node.op_type in _FOLLOWS and len(node.input) > _FOLLOWS[node.op_type]:
            source = types.get(node.input[_FOLLOWS[node.op_type]])
            if source is not None:
                for out in node.output:
                    types.setdefault(out, source)
    return {t for t, elem in types.items() if elem and elem not in _FLOAT}
