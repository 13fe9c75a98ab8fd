"""NaN/Inf weights are refused with one line naming the first of them (in initializer
order), whichever stage reads them first: prepare (with calibration data) or insertion (it
checks the weights it scales by their scales, the others by reading them)."""

import numpy as np
import onnx
import pytest
from helpers import G
from onnx import numpy_helper

from qdq_onnx import pipeline
from qdq_onnx.errors import QdqError

DATA = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)


def _model(poison: dict[str, float]) -> onnx.ModelProto:
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    b = g.conv("c1", a, 4)
    # a constant no weighted op reads: -inf there is meant (a Max's start)
    g.w("floor", np.full((1,), -np.inf))
    m = g.model([g.binary("Max", "mx", g.binary("Add", "add", a, b), "floor")])
    for t in m.graph.initializer:
        if t.name in poison:
            v = numpy_helper.to_array(t).copy()
            v.reshape(-1)[-1] = poison[t.name]
            t.CopyFrom(numpy_helper.from_array(v, t.name))
    return m


@pytest.mark.parametrize("data", [None, DATA], ids=["insertion", "prepare"])
@pytest.mark.parametrize("poison,named", [
    ({"c1_w": np.nan}, "c1_w"),  # a quantized weight: its scale is NaN
    ({"c1_w": np.inf}, "c1_w"),  # an infinity in a weight is refused too
    ({"c0_b": np.nan}, "c0_b"),  # a bias is not scaled: it is read
    ({"c0_b": np.inf}, "c0_b"),  # a weighted op's input: Inf refused as well
    ({"c1_w": np.nan, "c0_w": np.inf}, "c0_w"),  # the first in initializer order
])
def test_a_nan_or_inf_weight_is_refused_naming_it(data, poison, named):
    m = _model(poison)
    before = m.SerializeToString()
    with pytest.raises(QdqError, match=rf"^weight '{named}' holds NaN/Inf \(1 of \d+ values\)"):
        pipeline.insert(m, data=data)
    assert m.SerializeToString() == before  # the input is untouched


@pytest.mark.parametrize("data", [None, DATA], ids=["insertion", "prepare"])
def test_an_infinity_no_weighted_op_reads_is_kept(data):
    q = pipeline.insert(_model({}), data=data)
    floor = next(t for t in q.qdq.graph.initializer if t.name == "floor")
    assert numpy_helper.to_array(floor).tolist() == [-np.inf]
    assert q.report.weight_pairs == 2


def test_a_nan_in_a_constant_no_weighted_op_reads_is_refused():
    with pytest.raises(QdqError, match="weight 'floor' holds NaN/Inf"):
        pipeline.insert(_model({"floor": np.nan}))


@pytest.mark.parametrize("data", [None, DATA], ids=["insertion", "prepare"])
def test_a_nan_in_a_weight_held_by_a_constant_node_is_named(data):
    """paddle2onnx writes every weight as a Constant node: the check sees it too (with data
    it used to surface only as NaN activations in calibration)."""
    m = _model({"c1_w": np.nan})
    t = next(t for t in m.graph.initializer if t.name == "c1_w")
    m.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c1_w"], value=t))
    m.graph.initializer.remove(t)
    with pytest.raises(QdqError, match=r"^weight 'c1_w' holds NaN/Inf \(1 of 144 values\)"):
        pipeline.insert(m, data=data)
