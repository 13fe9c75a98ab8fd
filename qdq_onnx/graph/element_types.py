"""The one element-type inference: tensor name -> ONNX element type for a graph, from the
types it declares, its initializers and constants, and each op's type rule; with `infer`,
ONNX shape inference on a weightless view of the model first (what the typing and the range
guard need: every tensor). Without it (placement, which only asks which tensors are not
floating point), a forward pass fast enough for every plan."""

from __future__ import annotations

import contextlib

import onnx

FLOATS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                    onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE})
_INT64, _BOOL = onnx.TensorProto.INT64, onnx.TensorProto.BOOL
# Ops whose outputs have one type whatever they read.
_FIXED_OUT = {**dict.fromkeys(["Shape", "Size", "NonZero", "ArgMax", "ArgMin"], _INT64),
              **dict.fromkeys(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                               "Not", "And", "Or", "Xor", "IsNaN", "IsInf"], _BOOL)}
# Ops whose outputs have the element type of one input (its index).
_FOLLOWS = {**dict.fromkeys(
    ["Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Concat", "Gather",
     "GatherElements", "GatherND", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
     "Transpose", "Identity", "Expand", "Tile", "Split", "Pad", "Clip", "ReduceProd",
     "ReduceSum", "ReduceMax", "ReduceMin", "CumSum", "Range", "Sign", "ScatterND",
     "ScatterElements", "Relu"], 0), "Where": 1}


def _declared(graph: onnx.GraphProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    return types


def _by_rule(node: onnx.NodeProto, types: dict[str, int]) -> int | None:
    """The output type the op's rule gives (None: the rule does not say)."""
    if node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return value.data_type if value is not None else None
    if node.op_type == "Cast":
        return next((a.i for a in node.attribute if a.name == "to"), None)
    if node.op_type in _FIXED_OUT:
        return _FIXED_OUT[node.op_type]
    index = _FOLLOWS.get(node.op_type)
    if index is not None and len(node.input) > index:
        return types.get(node.input[index])
    return None


def element_types(model: onnx.ModelProto | onnx.GraphProto, infer: bool = True
                  ) -> dict[str, int]:
    """Tensor name -> ONNX element type. `infer` (a model): ONNX shape inference on a
    weightless view first, and a tensor neither it nor an op rule types takes the type of its
    producer's first typed input (as the elementwise and layout ops do). Without `infer`,
    declared types and op rules only."""
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    if infer and isinstance(model, onnx.ModelProto):
        from qdq_onnx.files.onnx_files import checker_view

        view = checker_view(model)
        with contextlib.suppress(Exception):  # what is known is used; the rest by the rules
            view = onnx.shape_inference.infer_shapes(view)
        graph = view.graph
    types = _declared(graph)
    for node in graph.node:
        found = _by_rule(node, types)
        if found is None and infer:
            found = next((types[i] for i in node.input if i in types), None)
        if found:
            for out in node.output:
                if out:
                    types.setdefault(out, found)
    return types


def non_float_tensors(graph: onnx.GraphProto) -> set[str]:
    """The tensors of `graph` whose element type is known and not floating point."""
    return {t for t, elem in element_types(graph, infer=False).items()
            if elem and elem not in FLOATS}
