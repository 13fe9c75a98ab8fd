"""The torch backend's op table against onnxruntime, node by node: single-op graphs over the
attribute forms that differ between ONNX's definition and torch's (asymmetric and automatic
padding, ceil mode, negative steps and indices, Resize's modes and coordinate transforms,
recurrences, Loop), and the fake-quant training graphs of the model pools (every node fed
onnxruntime's own inputs, compared within float32 summation-order noise)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from real_pool import BY_NAME as REAL
from torch_parity import node_by_node

from qdq_onnx import pipeline
from qdq_onnx.errors import QdqError

pytestmark = pytest.mark.torch
RNG = np.random.default_rng(7)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _single(op, x, inits=(), n_out=1, opset=17, extra_inputs=(), **attrs):
    """One node reading `x` (and the initializers) into `n_out` outputs."""
    names = ["x", *[i.name for i in inits], *extra_inputs]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, name="n", **attrs)
    return _model([node], [_f("x", list(x.shape))], [_f(o, None) for o in outs], inits,
                  opset), {"x": x}


W3 = _const("w", _x(4, 3, 3, 3))
CASES = {
    "conv_asymmetric_pads": _single("Conv", _x(2, 3, 9, 8), [W3], pads=[0, 1, 2, 0],
                                    strides=[2, 1]),
    "conv_same_upper_stride": _single("Conv", _x(1, 3, 9, 8), [W3], auto_pad="SAME_UPPER",
                                      strides=[2, 2]),
    "conv_same_lower_stride": _single("Conv", _x(1, 3, 8, 9), [W3], auto_pad="SAME_LOWER",
                                      strides=[2, 2]),
    "conv_dilated": _single("Conv", _x(1, 3, 9, 9), [W3], pads=[2, 1, 2, 1], dilations=[2, 2]),
    "conv_depthwise_1d": _single("Conv", _x(2, 4, 11), [_const("w", _x(4, 1, 3))],
                                 group=4, pads=[1, 1]),
    "conv_transpose_output_padding": _single(
        "ConvTranspose", _x(1, 3, 5, 4), [_const("w", _x(3, 2, 3, 3))], strides=[2, 2],
        pads=[1, 0, 1, 1], output_padding=[1, 1]),
    "conv_transpose_output_shape": _single(
        "ConvTranspose", _x(1, 3, 5, 5), [_const("w", _x(3, 2, 2, 2))], strides=[2, 2],
        output_shape=[10, 10]),
    "conv_transpose_grouped_same": _single(
        "ConvTranspose", _x(1, 4, 5, 5), [_const("w", _x(4, 1, 3, 3))], strides=[2, 2],
        group=2, auto_pad="SAME_UPPER"),
    "maxpool_ceil_asymmetric": _single("MaxPool", _x(1, 2, 7, 8), kernel_shape=[3, 3],
                                       strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1),
    "maxpool_same_upper": _single("MaxPool", _x(1, 2, 7, 7), kernel_shape=[2, 2],
                                  strides=[2, 2], auto_pad="SAME_UPPER"),
    "avgpool_exclude_pad": _single("AveragePool", _x(1, 2, 7, 8), kernel_shape=[3, 3],
                                   strides=[2, 2], pads=[1, 1, 1, 1]),
    "avgpool_include_pad_ceil": _single("AveragePool", _x(1, 2, 7, 8), kernel_shape=[3, 2],
                                        strides=[2, 2], pads=[1, 0, 0, 1],
                                        count_include_pad=1, ceil_mode=1),
    "resize_linear_half_pixel": _single(
        "Resize", _x(1, 2, 5, 7), [_const("roi", np.zeros(0, np.float32)),
                                   _const("scales", np.array([1, 1, 2, 1.5], np.float32))],
        mode="linear"),
    "resize_nearest_asymmetric_floor": _single(
        "Resize", _x(1, 2, 5, 7), [_const("roi", np.zeros(0, np.float32)),
                                   _const("scales", np.array([1, 1, 3, 2], np.float32))],
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "resize_cubic_align_corners_sizes": _single(
        "Resize", _x(1, 2, 6, 6), [_const("roi", np.zeros(0, np.float32)),
                                   _const("scales", np.zeros(0, np.float32)),
                                   _const("sizes", np.array([1, 2, 9, 4], np.int64))],
        mode="cubic", coordinate_transformation_mode="align_corners"),
    "pad_reflect": _single("Pad", _x(1, 2, 5, 6), [_const("p", np.array(
        [0, 0, 2, 1, 0, 0, 1, 2], np.int64))], mode="reflect"),
    "pad_constant_crop": _single("Pad", _x(1, 2, 5, 6), [
        _const("p", np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64)),
        _const("v", np.float32(0.5))]),
    "slice_negative_step": _single("Slice", _x(4, 9), [
        _const("s", np.array([-1, 7], np.int64)), _const("e", np.array([-10, 0], np.int64)),
        _const("a", np.array([0, 1], np.int64)), _const("k", np.array([-1, -3], np.int64))]),
    "gather_negative_indices": _single("Gather", _x(5, 4), [
        _const("i", np.array([[-1, 0], [2, -5]], np.int64))], axis=0),
    "split_uneven": _single("Split", _x(2, 7), [_const("s", np.array([3, 4], np.int64))],
                            n_out=2, axis=1),
    "softmax_opset11_flattens": _single("Softmax", _x(2, 3, 4), opset=11, axis=1),
    "reduce_mean_axes_input": _single("ReduceMean", _x(2, 3, 4), [
        _const("a", np.array([-1, 1], np.int64))], opset=18, keepdims=0),
    "hard_sigmoid": _single("HardSigmoid", _x(3, 8) * 4, alpha=0.25, beta=0.4),
    "hard_swish": _single("HardSwish", _x(3, 8) * 4),
    "layer_norm": _single("LayerNormalization", _x(2, 5, 6),
                          [_const("s", _x(6)), _const("b", _x(6))], epsilon=1e-3),
    "instance_norm": _single("InstanceNormalization", _x(2, 3, 5, 4),
                             [_const("s", _x(3)), _const("b", _x(3))]),
    "einsum": _single("Einsum", _x(2, 3, 4), [_const("w", _x(4, 5))],
                      equation="bij,jk->bik"),
    "lstm_bidirectional_peepholes": _single(
        "LSTM", _x(5, 2, 3), [_const("W", _x(2, 16, 3)), _const("R", _x(2, 16, 4)),
                              _const("B", _x(2, 32)), _const("L", np.array([5, 3], np.int32)),
                              _const("h", _x(2, 2, 4)), _const("c", _x(2, 2, 4)),
                              _const("P", _x(2, 12))],
        n_out=3, hidden_size=4, direction="bidirectional"),
    "gru_reverse_linear_before_reset": _single(
        "GRU", _x(4, 2, 3), [_const("W", _x(1, 12, 3)), _const("R", _x(1, 12, 4)),
                             _const("B", _x(1, 24))],
        n_out=2, hidden_size=4, direction="reverse", linear_before_reset=1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_op_form_computes_what_onnxruntime_computes(name):
    model, feeds = CASES[name]
    assert node_by_node(model, feeds) == []


def _loop_model():
    """A Loop summing x * i over 4 iterations and scanning the partial sums (a body that
    reads `x` from the outer scope, as tf2onnx's recurrent loops do)."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "fi"], ["xi"]),
         helper.make_node("Add", ["acc_in", "xi"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["acc_out"], ["scan"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _f("acc_in", [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _f("acc_out", [3]),
         _f("scan", [3])])
    node = helper.make_node("Loop", ["n", "c", "a0"], ["final", "scans"], body=body)
    return _model([node], [_f("x", [3])], [_f("final", None), _f("scans", None)],
                  [_const("n", np.int64(4)), _const("c", np.array(True)),
                   _const("a0", np.zeros(3, np.float32))])


def test_a_loop_runs_its_body_with_the_outer_scope():
    assert node_by_node(_loop_model(), {"x": _x(3)}) == []


def test_an_op_outside_the_table_is_refused_naming_it():
    import torch

    from qdq_onnx.finetune.backend.torch_graph import GraphRunner

    model, _ = _single("Celu", _x(2, 2))
    model.graph.node[0].op_type = "StringNormalizer"
    with pytest.raises(QdqError, match="cannot execute op.s. StringNormalizer"):
        GraphRunner(model.graph, 17, torch.device("cpu"), {})


def _fake_quant(model, feeds):
    from qdq_onnx.finetune.fake_quant import lower_to_fake_quant

    qdq = pipeline.insert(model, data=feeds).qdq
    dims = {k: v.shape for k, v in feeds.items()}
    return lower_to_fake_quant(qdq, False, None, dims, lower=False).model


REAL_FAST = {"ppocr_det", "mtcnn_onet", "magika"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in REAL_FAST else
                                               (pytest.mark.slow,)) for n in sorted(REAL)])
def test_real_pool_training_graphs_run_node_by_node_as_onnxruntime_runs_them(name):
    m = REAL[name]
    model = onnx.load(str(m.path()))
    graph = _fake_quant(model, m.inputs(8))
    assert node_by_node(graph, m.inputs(2)) == []


def _user_pool():
    from user_pool import POOL

    return [pytest.param(p.name, marks=() if p.name in ("lstm_text", "gru_text") else
                         (pytest.mark.slow,)) for p in POOL]


@pytest.mark.parametrize("name", _user_pool())
def test_conformance_pool_training_graphs_run_node_by_node(name):
    from user_pool import BY_NAME

    from qdq_onnx.data.feeds import as_named, match_inputs

    pm = BY_NAME[name]
    model = pipeline.convert(pm.build())
    feeds = match_inputs(as_named(pm.inputs(4)), model, source="pool data")
    graph = _fake_quant(model, feeds)
    assert node_by_node(graph, {k: v[:2] for k, v in feeds.items()}) == []


@pytest.mark.parametrize("learn_scales", [False, True])
def test_the_fused_quantizer_is_its_five_nodes(digits, float_model, learn_scales):
    """One FakeQuant per quantizer: the forward pass bit for bit, the gradients of weights
    and learned scales to float32 rounding."""
    import torch

    from qdq_onnx import quantize_model
    from qdq_onnx.files.onnx_files import default_opset
    from qdq_onnx.finetune.backend.torch_graph import GraphRunner, _Fused
    from qdq_onnx.finetune.fake_quant import lower_to_fake_quant

    q = quantize_model(float_model, calibration_data=digits[0][:64]).onnx
    graph = lower_to_fake_quant(q, learn_scales, lower=False)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.model.graph.initializer}
    x = torch.from_numpy(digits[0][:32])
    results = []
    for fuse in (True, False):
        params = {n: torch.nn.Parameter(torch.from_numpy(np.array(inits[n], np.float32)))
                  for n in graph.trainable}
        runner = GraphRunner(graph.model.graph, default_opset(graph.model),
                             torch.device("cpu"), params, fuse=fuse)
        fused = sum(isinstance(n, _Fused) for n in runner.nodes)
        assert fused == (len(graph.weights) + len(graph.activation_scales) if fuse else 0)
        (y,) = runner.run({graph.inputs[0]: x})
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        results.append((y.detach().numpy(), {n: p.grad.numpy() for n, p in params.items()}))
    (y_fused, g_fused), (y_plain, g_plain) = results
    np.testing.assert_array_equal(y_fused, y_plain)
    assert set(graph.activation_scales) <= set(g_fused) or not learn_scales
    for n in g_plain:
        # a scale's gradient sums thousands of terms that cancel: 1e-4 is its rounding
        rtol = 1e-3 if n in graph.activation_scales else 1e-5
        np.testing.assert_allclose(g_fused[n], g_plain[n], rtol=rtol,
                                   atol=1e-6 * float(np.abs(g_plain[n]).max()), err_msg=n)
