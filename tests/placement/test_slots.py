"""Slots: which inputs of a node are data and which are weights, and the per-channel axis a
weight gets from the rule file (falling back to TensorRT's for ops the rules in force do
not cover)."""

import numpy as np
import pytest
from helpers import G
from onnx import helper, numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.placement.rules import load_rules
from qdq_onnx.placement.slots import data_and_weight_slots, slot_proposal, weight_axis

TRT, TOOLKIT = load_rules("tensorrt"), load_rules("nvidia-tf-toolkit")


def _graph():
    g = G(input_shape=(1, 4, 8, 8))
    c = g.conv("c0", "x", 6)
    t = g.convt("ct", c, 3)
    flat = g.node("Flatten", "flat", [g.node("GlobalAveragePool", "gap", [t])])
    g.w("fc_w", np.ones((5, 3), np.float32))
    g.w("fc_b", np.zeros(5, np.float32))
    y = g.node("Gemm", "fc", [flat, "fc_w", "fc_b"], transB=1)
    g.w("mm_w", np.ones((5, 2), np.float32))
    g.node("MatMul", "mm", [y, "mm_w"])
    m = g.model(["mm_out"])
    return m, GraphIndex(m.graph)


def node(index, name):
    return index.by_name[name]


def test_weight_axes_follow_the_rule_file():
    m, index = _graph()
    assert weight_axis(index, node(index, "c0"), 1, TRT) == 0  # [K, C, kH, kW]
    assert weight_axis(index, node(index, "ct"), 1, TRT) == 0  # [C, K, kH, kW]: TensorRT's
    assert weight_axis(index, node(index, "fc"), 1, TRT) == 0  # transB=1: [N, K]
    assert weight_axis(index, node(index, "mm"), 1, TRT) == 1  # -1 normalised on [K, N]


def test_an_op_the_rules_do_not_cover_takes_tensorrts_axis():
    m, index = _graph()
    assert TOOLKIT.op_rule_for("ConvTranspose") is None
    assert weight_axis(index, node(index, "ct"), 1, TOOLKIT) == 0


def test_data_and_weight_slots_never_take_the_bias():
    m, index = _graph()
    assert data_and_weight_slots(index, node(index, "c0"), TRT) == ([0], [1])
    assert data_and_weight_slots(index, node(index, "fc"), TRT) == ([0], [1])


def test_a_proposal_for_a_weight_has_its_axis_and_constants_are_never_activations():
    m, index = _graph()
    p = slot_proposal(index, node(index, "c0"), 1, True, TRT, "TRT-W001", "r", 0, None)
    assert (p.kind, p.axis, p.tensor) == ("weight", 0, "c0_w")
    assert slot_proposal(index, node(index, "c0"), 2, True, TRT, "X", "r", 0, None) is None
    assert slot_proposal(index, node(index, "c0"), 5, True, TRT, "X", "r", 0, None) is None
    data = slot_proposal(index, node(index, "c0"), 0, True, TRT, "X", "r", 0, "layer")
    assert (data.kind, data.axis, data.layer) == ("activation", None, "layer")
    float_weight = slot_proposal(index, node(index, "c0"), 1, False, TRT, "X", "r", 0, None)
    assert float_weight.axis is None and not float_weight.quantize


def test_a_scalar_weight_has_no_channel_axis():
    g = G(input_shape=(1, 4))
    g.inits.append(numpy_helper.from_array(np.float32(2.0), "s"))
    g.nodes.append(helper.make_node("MatMul", ["x", "s"], ["y"], name="mm"))
    index = GraphIndex(g.nodes and helper.make_graph(g.nodes, "g", [], [], g.inits))
    with pytest.raises(QdqError, match="is a scalar"):
        weight_axis(index, index.by_name["mm"], 1, TRT)
