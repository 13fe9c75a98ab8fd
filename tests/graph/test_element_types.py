"""Which tensors are integer or boolean (never quantized, rule TRT-N003)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.graph.element_types import non_float_tensors
from qdq_onnx.placement.rules import load_rules


def _graph():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, [None, 6])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6, 4])
    table = numpy_helper.from_array(np.zeros((10, 4), np.float32), "table")
    one = numpy_helper.from_array(np.array(1, np.int32), "one")
    nodes = [
        helper.make_node("Add", ["ids", "one"], ["pos"]),  # integer arithmetic
        helper.make_node("Gather", ["table", "pos"], ["emb"]),  # float: the table's type
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "s0", "s1"], ["batch"]),
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Greater", ["ids_f", "ids_f"], ["mask"]),
        helper.make_node("Where", ["mask", "emb", "x"], ["picked"]),
        helper.make_node("Add", ["picked", "x"], ["y"]),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_graph(nodes, "g", [ids, x], [out], [table, one])


def test_integer_and_boolean_tensors_are_found_and_float_ones_are_not():
    found = non_float_tensors(_graph())
    assert {"ids", "one", "pos", "shape", "batch", "mask"} <= found
    assert not {"x", "table", "emb", "ids_f", "picked", "y"} & found


def test_the_rule_file_declares_the_non_float_never_rule():
    rule = load_rules("tensorrt").never_rule_for_tensors("non-float")
    assert rule is not None and rule.id == "TRT-N003" and not rule.ops


def test_an_unknown_tensor_kind_in_a_never_rule_is_refused(tmp_path):
    from qdq_onnx.errors import QdqError

    path = tmp_path / "r.yaml"
    path.write_text("schema: 1\nname: r\nop_rules: []\nnever:\n  - id: X1\n    name: x\n"
                    "    tensors: strings\n    reason: r\n")
    with pytest.raises(QdqError, match="'tensors' must be one of non-float"):
        load_rules(str(path))


def test_one_inference_types_every_tensor_and_agrees_with_the_fast_pass():
    """With shape inference (the typing's and the range guard's view) every tensor is
    typed; the fast pass placement reads never disagrees with it where both know."""
    from qdq_onnx.graph.element_types import FLOATS, element_types

    graph = _graph()
    s0 = numpy_helper.from_array(np.array([0], np.int64), "s0")
    s1 = numpy_helper.from_array(np.array([1], np.int64), "s1")
    graph.initializer.extend([s0, s1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    full, fast = element_types(model), element_types(graph, infer=False)
    produced = {o for n in graph.node for o in n.output}
    assert produced <= set(full)
    assert (full["mask"], full["ids_f"], full["shape"]) == (
        TensorProto.BOOL, TensorProto.FLOAT, TensorProto.INT64)
    assert all(full[t] == e for t, e in fast.items() if t in full)
    assert {t for t, e in full.items() if e not in FLOATS} >= non_float_tensors(graph)
