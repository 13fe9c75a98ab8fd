"""Keras conversion failure classes of tf2onnx 1.17, each handled: exact GELU (TF Erfc)
converts through a custom-op handler; an op tf2onnx cannot convert is one line naming the
Keras layer, its class and the TF op, never a traceback or tf2onnx's log."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from qdq_onnx.errors import QdqError  # noqa: E402


def _keras():
    import keras

    keras.utils.set_random_seed(0)
    return keras


@pytest.mark.slow
def test_exact_gelu_converts_and_matches_keras():
    from qdq_onnx import pipeline
    from qdq_onnx.graph.sessions import inference_session

    keras = _keras()
    inp = keras.Input((6,))
    x = keras.layers.Dense(16, activation="gelu", name="mlp1")(inp)
    m = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    onx = pipeline.convert(m)
    assert "Erf" in {n.op_type for n in onx.graph.node}
    xs = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    got = inference_session(onx).run(None, {onx.graph.input[0].name: xs})[0]
    assert np.abs(got - m(xs).numpy()).max() < 1e-5


@pytest.fixture(scope="module")
def encoder():
    """A transformer encoder block with exact GELU, converted and quantized once."""
    from qdq_onnx import quantize_model

    keras = _keras()
    L = keras.layers
    inp = keras.Input((16, 32))
    h = L.LayerNormalization(name="ln1")(inp)
    x = L.Add(name="res1")([inp, L.MultiHeadAttention(4, 8, name="mha")(h, h)])
    h = L.LayerNormalization(name="ln2")(x)
    h = L.Dense(64, activation="gelu", name="mlp_up")(h)
    x = L.Add(name="res2")([x, L.Dense(32, name="mlp_down")(h)])
    model = keras.Model(inp, L.Dense(10, name="head")(L.GlobalAveragePooling1D()(x)))
    x = np.random.default_rng(1).normal(size=(8, 16, 32)).astype(np.float32)
    return model, x, quantize_model(model, calibration_data=x)


@pytest.mark.slow
def test_transformer_encoder_with_exact_gelu_quantizes_and_lints_clean(encoder):
    from qdq_onnx import pipeline

    model, x, q = encoder
    onx = pipeline.convert(model)
    ops = [n.op_type for n in onx.graph.node]
    assert onx.opset_import[0].version == 17 and ops.count("LayerNormalization") == 2
    assert "GlobalAveragePool" not in ops  # no moments left to quantize
    from qdq_onnx.graph.sessions import inference_session

    got = inference_session(onx).run(None, {onx.graph.input[0].name: x})[0]
    assert np.abs(got - model(x).numpy()).max() < 1e-5
    report = pipeline.lint(q.export())
    assert report.errors == [] and all(layer.quantized or layer.kept_float == "TRT-K001"
                                       for layer in report.layers)
    # Placement sees Keras's attention through tf2onnx's einsum Reshapes: head size 8 is
    # outside TensorRT's fused INT8 MHA, so TRT-A001 keeps both products float, and lint,
    # reading the same rule options, agrees (no TRT-L016/L017).
    assert report.findings == []
    kept = [d for d in q.plan.left_float if d.rule == "TRT-A001"]
    assert kept and all("head size 8" in d.reason for d in kept)
    assert {"mlp_up", "mlp_down"} <= {p.layer for p in q.plan.weights()}
    # the 10-way head gains nothing in INT8: the cost model leaves it FP16 (TRT-K001)
    assert {d.rule for d in q.plan.left_float if d.layer == "head"} == {"TRT-K001"}
    assert not [p for p in q.plan.placements if p.layer in ("ln1", "ln2")]


@pytest.mark.slow
@pytest.mark.training
def test_transformer_encoder_fine_tunes(encoder, tmp_path):
    _, x, q = encoder
    q.compile(learning_rate=1e-3)  # opset-17 LayerNormalization trains in onnxruntime-training
    y = np.random.default_rng(2).integers(0, 10, 8)
    history = q.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    q.save(tmp_path / "int8.onnx")


@pytest.mark.slow
def test_unconvertible_op_is_one_line_naming_layer_class_and_op():
    import tensorflow as tf

    from qdq_onnx import pipeline

    keras = _keras()
    inp = keras.Input((6,))
    x = keras.layers.Dense(4, name="dense_a")(inp)
    x = keras.layers.Lambda(lambda t: tf.math.lgamma(tf.abs(t) + 1.0), name="weird_fn")(x)
    m = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
    with pytest.raises(QdqError) as err:
        pipeline.convert(m)
    text = str(err.value)
    assert "'weird_fn' (Lambda)" in text and "Lgamma" in text and "\n" not in text


@pytest.mark.slow
def test_cli_conversion_keeps_tensorflow_and_tf2onnx_chatter_off_the_console(tmp_path):
    keras = _keras()
    inp = keras.Input((6,))
    x = keras.layers.Dense(16, activation="gelu", name="mlp1")(inp)
    path = tmp_path / "gelu.keras"
    keras.Model(inp, keras.layers.Dense(3, name="head")(x)).save(path)
    res = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", "convert", str(path),
                          "-o", str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == ""
    assert "wrote" in res.stdout


def _audio_1d(L, keras):
    i = keras.Input((128, 4))
    x = L.Conv1D(16, 5, padding="same", activation="relu")(i)
    x = L.MaxPooling1D(2)(L.SeparableConv1D(32, 5, padding="same", activation="relu")(x))
    x = L.ReLU()(L.Add()([x, L.Conv1D(32, 3, padding="same")(x)]))
    return keras.Model(i, L.Dense(5)(L.GlobalAveragePooling1D()(x)))


def _volume_3d(L, keras):
    i = keras.Input((8, 16, 16, 2))
    x = L.MaxPooling3D(2)(L.Conv3D(8, 3, padding="same", activation="relu")(i))
    x = L.Conv3D(16, 3, padding="same", activation="relu")(x)
    return keras.Model(i, L.Dense(3)(L.GlobalAveragePooling3D()(x)))


def _encoder_decoder(L, keras):
    i = keras.Input((32, 32, 3))
    e1 = L.Conv2D(8, 3, padding="same", activation="relu")(i)
    e2 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(e1)
    d1 = L.Conv2DTranspose(8, 3, strides=2, padding="same")(e2)
    up = L.UpSampling2D(2)(L.Conv2D(8, 1)(e2))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(L.Concatenate()([d1, e1, up]))
    return keras.Model(i, L.Conv2D(2, 1)(x))


@pytest.mark.slow
@pytest.mark.parametrize("build", [_audio_1d, _volume_3d, _encoder_decoder],
                         ids=["conv1d-separable", "conv3d", "encoder-decoder"])
def test_hand_built_shapes_convert_and_lint_clean(build):
    from qdq_onnx import pipeline, quantize_model

    keras = _keras()
    model = build(keras.layers, keras)
    x = np.random.default_rng(0).normal(size=(4, *model.input_shape[1:])).astype(np.float32)
    q = quantize_model(model, calibration_data=x)
    report = pipeline.lint(q.export())
    assert report.findings == [] and report.layers
    assert all(la.quantized or la.kept_float == "TRT-K001" for la in report.layers)
    from qdq_onnx.graph.sessions import inference_session

    got = inference_session(q.float_model).run(None, {q.float_model.graph.input[0].name: x})[0]
    assert np.abs(got - model(x).numpy()).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("multiplier", [1, 2])
def test_grouped_convolution_converts_as_depthwise_on_a_clone(multiplier):
    """Keras runs Conv2D(groups=C) through an XLA-compiled call tf2onnx cannot convert
    (ConvNeXt); one input channel per group is a depthwise convolution, so a clone with
    DepthwiseConv2D of the same name and weights converts, and the user's model is kept."""
    from qdq_onnx import pipeline, quantize_model
    from qdq_onnx.graph.sessions import inference_session

    keras = _keras()
    L = keras.layers
    inp = keras.Input((12, 12, 8))
    x = L.Conv2D(8 * multiplier, 7, padding="same", groups=8, name="dw", use_bias=True)(inp)
    x = L.Conv2D(4, 1, activation="relu", name="pw")(x)
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))
    xs = np.random.default_rng(0).normal(size=(2, 12, 12, 8)).astype(np.float32)
    onx = pipeline.convert(model)
    got = inference_session(onx).run(None, {onx.graph.input[0].name: xs})[0]
    assert np.abs(got - model(xs).numpy()).max() < 1e-5
    convs = [n for n in onx.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert sorted(groups) == [1, 8]
    assert model.get_layer("dw").__class__.__name__ == "Conv2D"  # the user's model is kept
    q = quantize_model(model, calibration_data=xs)
    assert "dw" in {p.layer for p in q.plan.weights()}
    assert pipeline.lint(q.export()).findings == []


@pytest.mark.parametrize("per_group,multiplier", [(2, 1), (4, 1), (4, 2), (8, 1)])
def test_grouped_convolution_of_any_group_size_is_one_onnx_conv(per_group, multiplier):
    """Keras's TensorFlow backend XLA-compiles Conv2D(groups>1), which tf2onnx cannot
    convert; tracing with a plain TF conv instead gives one ONNX Conv with `group`
    (ResNeXt, RegNet), numerically equal to Keras."""
    from qdq_onnx import pipeline
    from qdq_onnx.graph.sessions import inference_session

    keras = _keras()
    L = keras.layers
    inp = keras.Input((10, 10, 16))
    x = L.Conv2D(16 * multiplier // per_group * per_group, 3, padding="same",
                 groups=16 // per_group, name="grouped", activation="relu")(inp)
    model = keras.Model(inp, L.Conv2D(4, 1, name="pw")(x))
    xs = np.random.default_rng(1).normal(size=(3, 10, 10, 16)).astype(np.float32)
    onx = pipeline.convert(model)
    got = inference_session(onx).run(None, {onx.graph.input[0].name: xs})[0]
    assert np.abs(got - model(xs).numpy()).max() < 1e-5
    groups = sorted(next((a.i for a in n.attribute if a.name == "group"), 1)
                    for n in onx.graph.node if n.op_type == "Conv")
    assert groups == [1, 16 // per_group]
    q = pipeline.insert(onx, data=xs)
    assert pipeline.lint(pipeline.type_remainder(q.qdq, data=xs).model).findings == []


def test_tensorflow_failure_is_one_line_with_the_cause_not_the_first_line():
    from qdq_onnx.convert.keras_model import failure_cause

    traced = ValueError('in user code:\n\n    File "/x/model.py", line 3, in call\n'
                        '        return self.dense(x)\n\n    ValueError: Input 0 of layer '
                        '"dense" is incompatible with the layer: expected axis -1 to have '
                        'value 8, but received input with shape (None, 4)\n')
    cause = failure_cause(traced)
    assert cause.startswith("ValueError: Input 0") and "expected axis -1 to have value 8" in cause
    assert "in user code" not in cause and "\n" not in cause
    assert failure_cause(RuntimeError("")) == "RuntimeError"


@pytest.mark.slow
def test_weights_captured_by_value_convert_like_frozen_weights():
    """Models with very large weights (VGG16) trace with their weights captured by value, so
    tf2onnx never freezes them; forced on a small model, the result equals the usual path
    (same ops, outputs, folded BatchNorm, layer map) and the Keras variables are restored."""
    from qdq_onnx import pipeline, quantize_model
    from qdq_onnx.convert.keras_model import keras_to_onnx
    from qdq_onnx.graph.sessions import inference_session

    keras = _keras()
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    x = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="c")(inp)))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.Add(name="res")([x, L.Conv2D(8, 1, name="pw")(x)])
    model = keras.Model(inp, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(y)))
    xs = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    kinds = {}
    for by_value in (False, True):
        onx = keras_to_onnx(model, by_value=by_value)
        got = inference_session(onx).run(None, {onx.graph.input[0].name: xs})[0]
        assert np.abs(got - model(xs).numpy()).max() < 1e-5
        assert [i.name for i in onx.graph.input] == [onx.graph.input[0].name]  # no weights
        kinds[by_value] = sorted(n.op_type for n in onx.graph.node)
        q = quantize_model(onx, calibration_data=xs)
        assert {p.layer for p in q.plan.weights()} == {"c", "dw", "pw"}  # head: TRT-K001
        assert pipeline.lint(q.export()).findings == []
    assert kinds[True] == kinds[False]
    assert all(type(v._value).__name__ != "EagerTensor" for v in model.weights)


@pytest.mark.training
def test_several_outputs_are_named_by_their_layers_and_train_by_those_names():
    """Keras users key losses and labels by the output layers' names: the converted model's
    outputs are `cls` and `box`, compile/fit take them, and the old positional names
    (`output_0`, `output_1`) still work as aliases."""
    from qdq_onnx import pipeline, quantize_model

    keras = _keras()
    inp = keras.Input((6,), name="features")
    h = keras.layers.Dense(8, activation="relu", name="trunk")(inp)
    model = keras.Model(inp, [keras.layers.Dense(3, name="cls")(h),
                              keras.layers.Dense(2, name="box")(h)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    labels = {"cls": rng.integers(0, 3, 16), "box": rng.normal(size=(16, 2)).astype(np.float32)}
    assert [o.name for o in pipeline.convert(model).graph.output] == ["cls", "box"]
    q = quantize_model(model, calibration_data=x)
    assert [o.name for o in q.onnx.graph.output] == ["cls", "box"]
    assert {"cls", "box"} <= {p.layer for p in q.plan.weights()}
    q.compile(loss={"cls": "sparse_categorical_crossentropy", "box": "mse"},
              loss_weights={"box": 2.0}, learning_rate=1e-3)
    history = q.fit(x, labels, batch_size=8, epochs=1, verbose=0,
                    validation_data=(x, labels))
    assert np.isfinite(history.history["loss"]).all()
    assert "val_cls_accuracy" in history.history
    # the positional names converted models had before, as aliases
    q.compile(loss={"output_0": "sparse_categorical_crossentropy", "output_1": "mse"},
              loss_weights={"output_1": 2.0}, learning_rate=1e-3)
    q.fit(x, {"output_0": labels["cls"], "output_1": labels["box"]}, batch_size=8, epochs=1,
          verbose=0)
    assert len(q.evaluate(x, {"output_0": labels["cls"], "box": labels["box"]})) == 2


def test_several_outputs_of_one_layer_fall_back_to_unique_positional_names():
    """A layer giving two outputs would name both outputs after it: those take their
    positions' names, the other output keeps its layer's name."""
    from qdq_onnx import pipeline

    keras = _keras()

    class Split(keras.layers.Layer):
        def call(self, t):
            return t * 2.0, t + 1.0

    inp = keras.Input((4,), name="features")
    a, b = Split(name="split")(inp)
    model = keras.Model(inp, [a, b, keras.layers.Dense(2, name="head")(inp)])
    onx = pipeline.convert(model)
    assert [o.name for o in onx.graph.output] == ["output_0", "output_1", "head"]


def test_output_names_fall_back_for_invalid_repeated_or_taken_names():
    """Each output keeps its wanted name when it is a plain identifier, given once and no
    other tensor's; otherwise its positional name, made unique. Positional aliases resolve
    to the named outputs, and naming one output twice is refused."""
    from onnx import TensorProto, helper

    from qdq_onnx.convert.keras_outputs import output_names
    from qdq_onnx.errors import SettingError
    from qdq_onnx.pipeline.training import OutputNames

    assert output_names(["cls", "box"], 2, set()) == ["cls", "box"]
    assert output_names(["a b", "box", "box", "x"], 4, {"x"}) == \
        ["output_0", "output_1", "output_2", "output_3"]
    assert output_names(["output_1", "head head"], 2, set()) == ["output_1", "output_1_1"]
    assert output_names(None, 1, set()) == ["output"]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("cls", "box")]
    graph = helper.make_graph([], "g", [], outputs)
    names = OutputNames(helper.make_model(graph))
    assert names.labels({"output_0": 1, "box": 2}) == {"cls": 1, "box": 2}
    with pytest.raises(SettingError, match="names output 'cls' twice"):
        names.resolve({"cls": 1, "output_0": 2}, "loss")
