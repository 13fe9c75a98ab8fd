"""Conformance on the network pool: Keras -> ONNX (layer map) -> plan -> Q/DQ, checked per
Keras layer in full default, full + spec, partial and index-selection scenarios."""

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow")

from keras_pool import POOL, layer_placement  # noqa: E402

from qdq_onnx import QuantizationSpec, quantize_model  # noqa: E402
from qdq_onnx.convert.keras_model import keras_to_onnx  # noqa: E402
from qdq_onnx.graph.layers import read_layer_map  # noqa: E402

W = {"input", "weight"}


@pytest.fixture(scope="module")
def pool():
    models = {name: build() for name, build in POOL.items()}
    return {name: (m, keras_to_onnx(m)) for name, m in models.items()}


def _placement(pool, name, **kw):
    keras_model, onnx_model = pool[name]
    q = quantize_model(onnx_model, **kw)
    return layer_placement(q.float_model, q.onnx), q


def _quantized(placement):
    return {k: v for k, v in placement.items() if v}


# The narrow classifier heads (fc2, fc: fewer than 16 outputs) stay in the float remainder
# by the cost model (TRT-K001); the original toolkit's rules quantize them (below).
FULL_DEFAULT = {
    "conv_only": {"conv_a": W, "conv_b": W, "conv_c": W},
    "depthwise_only": {"dw_a": W, "dw_b": W},
    "dense_only": {"fc1": W},
    "vgg_like": {"conv1": W, "conv2": W, "conv3": W, "pool2": {0}},
    "tiny_resnet": {"stem": W, "res_a": W, "res_b": W, "add": {0}, "gap": {0}},
    "resnet_bn": {"stem": W, "res_a": W, "res_b": W, "add": {1}, "gap": {0}},
    "inception_block": {"b1_1x1": W, "b2_1x1": W, "b2_3x3": W, "b3_1x1": W, "head": W},
}


@pytest.mark.parametrize("name", sorted(FULL_DEFAULT))
def test_full_default(pool, name):
    placement, q = _placement(pool, name)
    assert _quantized(placement) == FULL_DEFAULT[name]
    heads = {d.layer for d in q.plan.left_float if d.rule == "TRT-K001"}
    assert heads == {"dense_only": {"fc2"}, "vgg_like": {"fc"}, "tiny_resnet": {"fc"},
                     "resnet_bn": {"fc"}}.get(name, set())
    onnx.checker.check_model(q.onnx, full_check=True)


def test_layer_map_records_classes_and_folded_batchnorm(pool):
    _, onnx_model = pool["resnet_bn"]
    lm = {r.name: r for r in read_layer_map(onnx_model).layers}
    assert lm["stem"].class_name == "Conv2D" and lm["stem"].nodes
    assert lm["stem_bn"].class_name == "BatchNormalization"
    assert not lm["stem_bn"].nodes and lm["stem_bn"].folded_into == lm["stem"].nodes[0]


def test_onnx_matches_keras_after_folding(pool):
    from qdq_onnx.graph.sessions import inference_session

    keras_model, onnx_model = pool["resnet_bn"]
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
    sess = inference_session(onnx_model.SerializeToString())
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, keras_model(x, training=False).numpy(), rtol=1e-4,
                               atol=1e-4)


def test_full_with_spec(pool):
    spec = QuantizationSpec()
    spec.add("conv2", quantize_input=False, quantize_weight=False)
    spec.add("pool1", quantize_input=True)
    spec.add("Dense", is_keras_class=True, quantize_input=False)
    placement, _ = _placement(pool, "vgg_like", quantization_spec=spec)
    assert _quantized(placement) == {"conv1": W, "pool1": {0}, "conv3": W, "pool2": {0},
                                     "fc": {"weight"}}


def test_partial_mode(pool):
    spec = QuantizationSpec().add(["res_b", "gap"])
    placement, _ = _placement(pool, "tiny_resnet", quantization_mode="partial",
                              quantization_spec=spec)
    assert _quantized(placement) == {"res_b": W, "gap": {0}}


@pytest.mark.parametrize("index,expected", [([1], {1}), ([0, 2], {0, 2}), ([0, 1, 2],
                                                                          {0, 1, 2})])
def test_index_selection_on_concat(pool, index, expected):
    spec = QuantizationSpec().add("concat", quantization_index=index)
    placement, _ = _placement(pool, "inception_block", quantization_spec=spec)
    assert placement["concat"] == expected
    assert placement["b3_1x1"] == W


def test_index_selection_on_add_overrides_residual_rule(pool):
    spec = QuantizationSpec().add("add", quantization_index=[0, 1])
    placement, _ = _placement(pool, "resnet_bn", quantization_spec=spec)
    assert placement["add"] == {0, 1}


def test_keras_class_selection_in_partial_mode(pool):
    spec = QuantizationSpec().add("Conv2D", is_keras_class=True, quantize_weight=False)
    placement, _ = _placement(pool, "inception_block", quantization_mode="partial",
                              quantization_spec=spec)
    assert _quantized(placement) == {n: {"input"} for n in
                                     ("b1_1x1", "b2_1x1", "b2_3x3", "b3_1x1", "head")}


def test_spec_on_folded_batchnorm_is_explained(pool):
    from qdq_onnx.errors import SpecError

    with pytest.raises(SpecError, match="stem_bn.*folded into"):
        _placement(pool, "resnet_bn", quantization_spec=QuantizationSpec().add("stem_bn"))


def test_sequential_and_subclassed_models_convert_with_layer_names():
    import keras

    seq = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
                            keras.layers.Flatten(), keras.layers.Dense(2, name="d")])
    lm = read_layer_map(keras_to_onnx(seq))
    assert {r.name for r in lm.layers if r.nodes} >= {"c", "d"}

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, name="sub_conv")
            self.head = keras.layers.Dense(2, name="sub_head")

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    onnx_model = keras_to_onnx(net)
    lm = {r.name: r for r in read_layer_map(onnx_model).layers}
    assert lm["sub_conv"].nodes and lm["sub_head"].nodes
    spec = QuantizationSpec().add("sub_head")
    q = quantize_model(onnx_model, "partial", spec)
    assert {p.layer for p in q.plan.placements} == {"sub_head"}
