"""Tensor shapes for lint: inferred where ONNX can, probed by one run where a shape is
computed at run time (tf2onnx's Shape -> Gather -> ReduceProd -> Reshape)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.graph.shapes import inferred_shapes, probed_shapes, tensor_shapes


def _flatten_heads(batch_dim="batch", seq=6):
    """x [B, S, 2, 4] -> Reshape to [B*S*2, 4], the target computed at run time the way
    tf2onnx writes it."""
    inits = [numpy_helper.from_array(np.array([0, 1, 2], np.int64), "lead"),
             numpy_helper.from_array(np.array([4], np.int64), "tail")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "lead"], ["lead_dims"], axis=0),
             helper.make_node("ReduceProd", ["lead_dims"], ["rows"], keepdims=1),
             helper.make_node("Concat", ["rows", "tail"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [batch_dim, seq, 2, 4])], [helper.make_tensor_value_info(
            "flat", TensorProto.FLOAT, [None, None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_runtime_computed_shape_is_probed_where_inference_stops():
    m = _flatten_heads()
    assert None in (inferred_shapes(m).get("flat") or [None])  # inference cannot follow it
    assert probed_shapes(m, ["flat"]) == {"flat": [12, 4]}  # batch 1: 1*6*2 rows
    assert tensor_shapes(m, ["flat", "shape"]) == {"flat": [12, 4], "shape": [4]}


def test_an_unknown_non_batch_dimension_is_not_guessed():
    m = _flatten_heads()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    assert probed_shapes(m, ["flat"]) == {}
    shape = tensor_shapes(m, ["flat"])["flat"]
    assert shape is None or shape[0] is None


def test_inputs_are_not_modified():
    m = _flatten_heads()
    before = m.SerializeToString()
    tensor_shapes(m, ["flat"])
    assert m.SerializeToString() == before
