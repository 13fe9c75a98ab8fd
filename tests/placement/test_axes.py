"""Per-channel weight axis per consumer op, on hand-built graphs, checked end to end."""

import helpers
import numpy as np
import onnx
import pytest
from helpers import G, dq_fed, run
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import quantize_model


def _axes(q):
    out = {}
    for n in q.onnx.graph.node:
        if n.op_type == "DequantizeLinear":
            axis = [a.i for a in n.attribute if a.name == "axis"]
            scale = next(t for t in q.onnx.graph.initializer if t.name == n.input[1])
            out[n.name] = (axis[0] if axis else None, int(np.prod(scale.dims)))
    return out


def _weight_pair(q, consumer):
    p = [p for p in q.plan.weights() if p.consumer == consumer]
    assert len(p) == 1
    return p[0]


def _check_runs_close(model, q, x, rel=0.1):
    onnx.checker.check_model(q.onnx, full_check=True)
    a, b = run(model, x)[0], run(q.onnx, x)[0]
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rel * np.abs(a).max() + 1e-6


@pytest.mark.parametrize("group,k", [(1, 6), (2, 6), (4, 4)])
def test_conv_grouped_and_depthwise_axis0(group, k):
    g = G()
    y = g.conv("c", "x", k, group=group)
    m = g.model([y])
    q = quantize_model(m)
    p = _weight_pair(q, "c")
    assert p.axis == 0
    axes = _axes(q)
    assert (0, k) in axes.values()
    x = helpers.RNG.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)
    _check_runs_close(m, q, x)


def test_convtranspose_weights_are_per_channel_on_axis_0():
    """TensorRT's deconvolution kernels take scales on axis 0 of the [C, K/g, kH, kW]
    weight (NVIDIA/TensorRT#2380, #1694): 4 input channels -> 4 scales, not 6."""
    g = G()
    y = g.convt("ct", "x", 6)
    m = g.model([y])
    q = quantize_model(m)
    assert _weight_pair(q, "ct").axis == 0
    assert (0, 4) in _axes(q).values()
    _check_runs_close(m, q, helpers.RNG.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32))


@pytest.mark.training
def test_convtranspose_axis_0_in_the_training_graph_and_trained_through_its_rewrite():
    """The fake-quant lowering scales a ConvTranspose weight per channel on axis 0. Its
    inference form computes what the Q/DQ graph computes, bit for bit; the training graph
    runs the ConvTranspose as a Conv over the upsampled input (onnxruntime-training 1.19
    has no CPU ConvTransposeGrad), equal up to float32 rounding before the next Q/DQ."""
    from qdq_onnx.finetune.emit import fake_quant_model
    from qdq_onnx.finetune.fake_quant import lower_to_fake_quant
    from qdq_onnx.graph.sessions import inference_session

    g = G(input_shape=(1, 4, 8, 8))
    y = g.convt("ct", g.unary("Relu", "r", g.conv("c", "x", 4)), 6)
    q = quantize_model(g.model([y]),
                       calibration_data=helpers.RNG.uniform(-1, 1, (8, 4, 8, 8)).astype(np.float32))
    train = lower_to_fake_quant(q.onnx)
    ct = next(w for w in train.weights if w.weight == "ct_w")
    assert ct.axis == 0
    scale = next(t for t in train.model.graph.initializer if t.name == ct.train_scale)
    assert list(scale.dims) == [4, 1, 1, 1]
    assert "ConvTranspose" not in {n.op_type for n in train.model.graph.node}
    inference = fake_quant_model(train, {})
    assert "ConvTranspose" in {n.op_type for n in inference.graph.node}
    for _ in range(5):
        x = helpers.RNG.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)
        expected = inference_session(q.onnx, optimize=False).run(None, {"x": x})[0]
        got = inference_session(inference, optimize=False).run([train.output], {"x": x})[0]
        assert np.array_equal(got, expected)
        lowered = inference_session(train.model, optimize=False).run([train.output],
                                                                      {"x": x})[0]
        assert np.abs(lowered - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    q.compile(loss="mse", learning_rate=1e-3)
    x = helpers.RNG.uniform(-1, 1, (16, 4, 8, 8)).astype(np.float32)
    q.fit(x, helpers.RNG.normal(size=(16, 6, 8, 8)).astype(np.float32), batch_size=8, verbose=0)
    assert "ConvTranspose" in {n.op_type for n in q.export().graph.node}


def _dense_model(op: str, trans_b: int | None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 7])
    w = helpers.RNG.normal(0, 0.5, (7, 5) if trans_b else (5, 7)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    node = helper.make_node(op, ["x", "w"], ["y"], name="d", **attrs)
    m = helper.make_model(helper.make_graph([node], "d", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("op,trans_b,axis", [("Gemm", 1, 0), ("Gemm", 0, 1),
                                             ("MatMul", None, 1)])
def test_gemm_and_matmul_axes(op, trans_b, axis):
    m = _dense_model(op, trans_b)
    q = quantize_model(m)
    assert _weight_pair(q, "d").axis == axis
    assert (axis, 7) in _axes(q).values()
    assert dq_fed(q.onnx) == {("d", 0), ("d", 1)}
    _check_runs_close(m, q, helpers.RNG.uniform(-1, 1, (3, 5)).astype(np.float32))


def test_matmul_with_live_b_quantizes_both_per_tensor():
    a = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 4])
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["y"], name="mm")]
    m = helper.make_model(helper.make_graph(nodes, "att", [a], [y]),
                          opset_imports=[helper.make_opsetid("", 13)])
    q = quantize_model(m)
    assert {(p.consumer, p.input, p.kind) for p in q.plan.placements} == {
        ("mm", 0, "activation"), ("mm", 1, "activation")}
    assert all(p.axis is None for p in q.plan.placements)


def test_bias_is_never_quantized():
    g = G()
    y = g.conv("c", "x", 4, bias=True)
    q = quantize_model(g.model([y]))
    assert ("c", 2) not in dq_fed(q.onnx)
    assert ("c", 0) in dq_fed(q.onnx) and ("c", 1) in dq_fed(q.onnx)
