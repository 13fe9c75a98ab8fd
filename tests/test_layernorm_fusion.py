"""Decomposed layer normalisation (tf2onnx's moments form) fused back into one op."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.convert.layernorm import fuse_layernorm
from qdq_onnx.convert.prepare import prepare_model
from qdq_onnx.graph.sessions import inference_session

RNG = np.random.default_rng(5)
C = 12


def decomposed(opset=17, beta=True, near_miss=False):
    """tf2onnx's form: GAP moments, Sub, x*x, eps, Sqrt, Reciprocal, gamma, scale and shift."""
    gamma = RNG.uniform(0.5, 1.5, (1, 1, C)).astype(np.float32)
    inits = [numpy_helper.from_array(gamma, "gamma"),
             numpy_helper.from_array(np.float32(1e-3), "eps"),
             numpy_helper.from_array(RNG.normal(0, .3, (C, 5)).astype(np.float32), "w")]
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["mean"], name="mean"),
        helper.make_node("Sub", ["x", "mean"], ["d"], name="sub"),
        helper.make_node("Mul", ["d", "d"], ["sq"], name="sq"),
        helper.make_node("GlobalAveragePool", ["sq"], ["var"], name="var"),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["s"], name="sqrt"),
        helper.make_node("Reciprocal", ["s"], ["r"], name="rec"),
        helper.make_node("Mul", ["r", "gamma"], ["k"], name="k"),
        helper.make_node("Mul", ["x", "k"], ["xs"], name="scaled"),
        helper.make_node("Neg", ["mean"], ["nm"], name="neg"),
        helper.make_node("Mul", ["nm", "k"], ["sh"], name="shifted"),
    ]
    shift = "sh"
    if beta:
        inits.append(numpy_helper.from_array(RNG.normal(0, .5, (1, 1, C)).astype(np.float32),
                                             "beta"))
        nodes.append(helper.make_node("Add", ["sh", "beta"], ["shb"], name="beta_add"))
        shift = "shb"
    nodes.append(helper.make_node("Add", ["xs", shift], ["ln"], name="ln_out"))
    if near_miss:  # the variance read elsewhere too: not a plain layer normalisation
        nodes.append(helper.make_node("Relu", ["var"], ["leak"], name="leak"))
    nodes.append(helper.make_node("MatMul", ["ln", "w"], ["y"], name="head"))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7, 5])]
    if near_miss:
        outs.append(helper.make_tensor_value_info("leak", TensorProto.FLOAT, ["N", 7, 1]))
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 7, C])], outs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_moments_fuse_into_one_layernormalization_that_computes_the_same():
    m = decomposed()
    fused = onnx.ModelProto()
    fused.CopyFrom(m)
    removed = fuse_layernorm(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert ops == ["LayerNormalization", "MatMul"]
    assert len(removed) == 12 and set(removed.values()) == {"ln_out"}
    onnx.checker.check_model(fused, full_check=True)
    x = RNG.normal(0, 2, (3, 7, C)).astype(np.float32)
    a = inference_session(m).run(None, {"x": x})[0]
    b = inference_session(fused).run(None, {"x": x})[0]
    assert np.abs(a - b).max() < 1e-5


def test_without_beta_and_through_prepare_only_from_opset_17():
    prepared, notes = prepare_model(decomposed(beta=False))
    assert [n.op_type for n in prepared.graph.node] == ["LayerNormalization", "MatMul"]
    assert any("LayerNormalization" in note for note in notes)
    old, _ = prepare_model(decomposed(opset=13))  # LayerNormalization needs opset 17
    assert "LayerNormalization" not in {n.op_type for n in old.graph.node}


def test_near_miss_is_left_alone():
    m = decomposed(near_miss=True)
    assert fuse_layernorm(m) == {}
    assert "LayerNormalization" not in {n.op_type for n in m.graph.node}
