"""The training-graph rewrites of AveragePool and ConvTranspose (finetune/lowering.py)
compute what the original ops compute, to float32 rounding, on every attribute they take."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.lowering import lower_average_pool, lower_conv_transpose
from qdq_onnx.graph.sessions import inference_session

TOLERANCE = 1e-5  # relative to the output's magnitude: the same sums in another order


def _model(node, x_shape, inits):
    g = helper.make_graph([node], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [onnx.ValueInfoProto(name="y")],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _lowered(model, nodes):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _compare(model, lowered, x):
    want = inference_session(model, optimize=False).run(None, {"x": x})[0]
    got = inference_session(lowered, optimize=False).run(None, {"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOLERANCE * max(1.0, float(np.abs(want).max()))


POOLS = [dict(kernel_shape=[2, 2], strides=[2, 2]),
         dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
         dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 1, 0]),
         dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
         dict(kernel_shape=[3], strides=[2], pads=[1, 1])]


@pytest.mark.parametrize("attrs", POOLS, ids=[str(i) for i in range(len(POOLS))])
def test_average_pool_as_depthwise_conv(attrs):
    shape = [2, 5, 9] if len(attrs["kernel_shape"]) == 1 else [2, 5, 9, 8]
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", **attrs)
    model = _model(node, shape, [])
    lowered = _lowered(model, lower_average_pool(node, shape, model.graph))
    assert "AveragePool" not in {n.op_type for n in lowered.graph.node}
    _compare(model, lowered, np.random.default_rng(0).normal(size=shape).astype(np.float32))


TRANSPOSES = [dict(strides=[2, 2], kernel=(2, 2)),
              dict(strides=[2, 2], kernel=(3, 3), pads=[0, 0, 1, 1]),
              dict(strides=[2, 2], kernel=(3, 3), pads=[1, 1, 1, 1], output_padding=[1, 1]),
              dict(strides=[1, 1], kernel=(3, 3), pads=[1, 1, 1, 1]),
              dict(strides=[3, 2], kernel=(4, 3), pads=[2, 0, 1, 2], dilations=[1, 2]),
              dict(strides=[2, 2], kernel=(3, 3), group=2),
              dict(strides=[2], kernel=(4,), pads=[1, 1])]


@pytest.mark.parametrize("cfg", TRANSPOSES, ids=[str(i) for i in range(len(TRANSPOSES))])
def test_conv_transpose_as_conv_over_the_upsampled_input(cfg):
    cfg = dict(cfg)
    kernel, group = cfg.pop("kernel"), cfg.get("group", 1)
    rng = np.random.default_rng(1)
    c_in, c_out = 4, 6
    shape = [2, c_in, 5] if len(kernel) == 1 else [2, c_in, 5, 6]
    w = rng.normal(size=(c_in, c_out // group, *kernel)).astype(np.float32)
    b = rng.normal(size=(c_out,)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up",
                            kernel_shape=list(kernel), **cfg)
    model = _model(node, shape, [numpy_helper.from_array(w, "w"),
                                 numpy_helper.from_array(b, "b")])
    lowered = _lowered(model, lower_conv_transpose(node, shape, list(w.shape), model.graph))
    assert "ConvTranspose" not in {n.op_type for n in lowered.graph.node}
    _compare(model, lowered, rng.normal(size=shape).astype(np.float32))


def test_what_the_rewrites_cannot_take_is_refused_by_name():
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                            ceil_mode=1)
    with pytest.raises(QdqError, match="pool: an AveragePool with ceil_mode=1"):
        lower_average_pool(node, [1, 3, 8, 8], helper.make_graph([], "g", [], []))
    with pytest.raises(QdqError, match="needs a known input shape"):
        lower_average_pool(node, [1, 3, None, 8], helper.make_graph([], "g", [], []))
