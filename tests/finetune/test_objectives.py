"""What fine-tuning minimises beyond one output with labels: a loss per output with weights
(Keras's compile(loss={...}, loss_weights={...})), and self-distillation from the float model
(no labels, MSE or KL with a temperature), in Python and on the command line."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy
from qdq_onnx.errors import QdqError, SettingError
from qdq_onnx.graph.sessions import inference_session

pytestmark = pytest.mark.training


def _two_heads(seed=0):
    """digits (64 features) -> 32 ReLU -> class logits [10] and a 2-value regression head."""
    rng = np.random.default_rng(seed)
    w = {"w0": rng.normal(0, 0.2, (64, 32)), "b0": np.zeros(32),
         "wc": rng.normal(0, 0.2, (32, 10)), "bc": np.zeros(10),
         "wr": rng.normal(0, 0.2, (32, 2)), "br": np.zeros(2)}
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="fc0"),
             helper.make_node("Add", ["h0", "b0"], ["h1"], name="fc0_bias"),
             helper.make_node("Relu", ["h1"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "wc"], ["c0"], name="cls"),
             helper.make_node("Add", ["c0", "bc"], ["classes"], name="cls_bias"),
             helper.make_node("MatMul", ["h", "wr"], ["r0"], name="reg"),
             helper.make_node("Add", ["r0", "br"], ["halves"], name="reg_bias")]
    g = helper.make_graph(
        nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("classes", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("halves", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def onnx_metadata(path):
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def _halves(x):
    """The regression target: mean ink of the top and bottom half of each digit."""
    return np.stack([x[:, :32].mean(1), x[:, 32:].mean(1)], 1).astype(np.float32)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_a_loss_per_output_with_weights_is_the_weighted_total(digits):
    xtr, ytr, xte, yte = digits
    q = quantize_model(_two_heads(), calibration_data=xtr[:256])
    q.compile(loss={"classes": "sparse_categorical_crossentropy", "halves": "mse"},
              loss_weights={"halves": 4.0}, learning_rate=3e-3)
    before = q.evaluate(xte, {"classes": yte, "halves": _halves(xte)})
    history = q.fit(xtr, {"classes": ytr, "halves": _halves(xtr)}, batch_size=32, epochs=4,
                    verbose=0, validation_data=(xte, [yte, _halves(xte)]))
    assert history.history["val_loss"][-1] < 0.5 * before[0]
    assert history.history["val_classes_accuracy"][-1] > 0.7
    # evaluate's loss is CE(classes) + 4 * MSE(halves) of the eval outputs
    classes, halves = q.predict(xte)
    ce = -np.mean(np.log(_softmax(classes.astype(np.float64))[np.arange(len(yte)), yte]))
    mse = np.mean((halves - _halves(xte)) ** 2)
    loss, acc = q.evaluate(xte, [yte, _halves(xte)])
    assert loss == pytest.approx(ce + 4.0 * mse, rel=1e-4)
    assert acc == pytest.approx(np.mean(classes.argmax(1) == yte))
    emitted = q.export_fp32()  # checked against the training graph on every output
    got = inference_session(emitted).run(None, {"x": xte[:8]})
    broken = onnx.ModelProto()
    broken.CopyFrom(emitted)
    bias = next(t for t in broken.graph.initializer if t.name == "br")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, "br"))
    with pytest.raises(QdqError, match="on output 'halves'"):
        q._training._trainer.check_emitted(broken, xte[:32])
    assert [o.name for o in emitted.graph.output] == ["classes", "halves"]
    assert got[1].shape == (8, 2)


def test_an_output_without_a_loss_is_not_trained_on(digits):
    xtr, ytr, _, _ = digits
    q = quantize_model(_two_heads(), calibration_data=xtr[:256])
    q.compile(loss={"classes": "sparse_categorical_crossentropy"}, learning_rate=1e-2)
    q.fit(xtr[:256], {"classes": ytr[:256]}, epochs=1, verbose=0)
    start = {t.name: numpy_helper.to_array(t) for t in q.onnx.graph.initializer}
    trained = {t.name: numpy_helper.to_array(t) for t in q.export_fp32().graph.initializer}
    assert np.array_equal(trained["wr"], start["wr"])  # no gradient reaches the other head
    assert not np.array_equal(trained["wc"], start["wc"])


def test_per_output_settings_and_labels_are_checked(digits):
    xtr, ytr, _, _ = digits
    q = quantize_model(_two_heads(), calibration_data=xtr[:64])
    with pytest.raises(SettingError, match=r"'boxes'.*not outputs of the model"):
        q.compile(loss={"boxes": "mse"})
    with pytest.raises(SettingError, match="gives 3 values for the model's 2 outputs"):
        q.compile(loss=["mse", "mse", "mse"])
    q.compile(loss=["sparse_categorical_crossentropy", "mse"])
    with pytest.raises(QdqError, match=r"no labels for output\(s\) \['halves'\]"):
        q.fit(xtr, {"classes": ytr}, verbose=0)
    with pytest.raises(QdqError, match="give labels as a dict by output name"):
        q.fit(xtr, ytr, verbose=0)


def test_distillation_needs_no_labels_and_recovers_4bit_ptq(digits, float_model):
    """Self-distillation from the FP32 model wins back most of what 4-bit weights lose,
    with no label at all."""
    xtr, _, xte, yte = digits
    fp32 = accuracy(float_model, xte, yte)
    q = quantize_model(float_model, calibration_data=xtr[:512], weight_scheme="int8-4bit")
    ptq = accuracy(q.onnx, xte, yte)
    assert fp32 - ptq >= 0.02
    q.compile(distill=True, distill_loss="kl", temperature=2.0, learning_rate=1e-3)
    history = q.fit(xtr, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    qat = accuracy(q.export(), xte, yte)
    assert qat >= ptq + 0.5 * (fp32 - ptq), (fp32, ptq, qat)


def test_kl_distillation_loss_is_the_softened_kl_to_the_float_outputs(digits, float_model):
    xtr, _, xte, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:256], weight_scheme="int8-4bit")
    q.compile(distill=True, distill_loss="kl", temperature=3.0)
    loss = q.evaluate(xte)[0]
    t = inference_session(float_model).run(None, {"x": xte})[0] / 3.0
    s = q.predict(xte) / 3.0
    p, log_p = _softmax(t.astype(np.float64)), np.log(_softmax(t.astype(np.float64)))
    log_q = np.log(_softmax(s.astype(np.float64)))
    kl = 9.0 * np.mean(np.sum(p * (log_p - log_q), axis=1))
    assert loss == pytest.approx(kl, rel=1e-3) and kl > 0


def _softmax_ending(float_model):
    """The trained digits MLP with a final Softmax: it outputs probabilities."""
    from helpers import mlp

    model = mlp(softmax=True)
    trained = {t.name: t for t in float_model.graph.initializer}
    for t in model.graph.initializer:
        t.CopyFrom(trained[t.name])
    return model


def _kl(teacher, student, temperature):
    """T^2 * mean over samples of KL(softmax(log(p_t)/T) || softmax(log(p_s)/T)) of
    probabilities (clipped as the loss clips them)."""
    def log_tempered(p):
        z = np.log(np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)) / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p, log_q = log_tempered(teacher), log_tempered(student)
    return temperature ** 2 * np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))


def test_kl_distillation_of_probabilities_is_the_kl_of_the_probabilities(digits, float_model):
    """A model ending in Softmax outputs probabilities: KL distillation compares them as
    such (tempered as softmax(log(p)/T)), not softmax(probabilities), which is ~flat."""
    xtr, _, xte, _ = digits
    model = _softmax_ending(float_model)
    q = quantize_model(model, calibration_data=xtr[:256], weight_scheme="int8-4bit")
    q.compile(distill=True, distill_loss="kl", temperature=3.0)
    loss = q.evaluate(xte)[0]
    teacher = inference_session(model).run(None, {"x": xte})[0]
    student = q.predict(xte)
    assert np.allclose(student.sum(1), 1.0, atol=1e-4)  # probabilities indeed
    kl = _kl(teacher, student, 3.0)
    assert loss == pytest.approx(kl, rel=1e-3) and kl > 0
    flattened = 9.0 * np.mean(np.sum(_softmax(teacher / 3.0) * (
        np.log(_softmax(teacher / 3.0)) - np.log(_softmax(student / 3.0))), axis=1))
    assert loss > 10 * flattened  # softmax of probabilities: a much smaller loss


def test_kl_distillation_reads_probabilities_from_a_softmax_or_the_setting(float_model):
    from qdq_onnx.finetune.config import TrainConfig
    from qdq_onnx.finetune.objective import Objective

    def probabilities(model, **settings):
        config = TrainConfig(distill=True, distill_loss="kl", **settings)
        return [p.probabilities for p in Objective.from_config(config, model).parts]

    assert probabilities(_softmax_ending(float_model)) == [True]
    assert probabilities(float_model) == [False]
    assert probabilities(float_model, from_logits=False) == [True]


def test_fit_distill_true_without_compile_and_mse_on_every_output(digits):
    xtr, _, _, _ = digits
    q = quantize_model(_two_heads(), calibration_data=xtr[:256], weight_scheme="int8-4bit")
    history = q.fit(xtr[:512], distill=True, batch_size=32, epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    with pytest.raises(QdqError, match="already trained"):
        q.fit(xtr[:64], [np.zeros(64, int), np.zeros((64, 2))], distill=False, verbose=0)


def test_cli_distill_and_per_output_labels(digits, tmp_path, capsys):
    xtr, ytr, _, _ = digits
    src = tmp_path / "two.onnx"
    onnx.save(quantize_model(_two_heads(), calibration_data=xtr[:128]).onnx, src)
    np.savez(tmp_path / "nolabels.npz", x=xtr[:256])
    out = tmp_path / "distilled.onnx"
    assert main(["finetune", str(src), "--data", str(tmp_path / "nolabels.npz"), "-o",
                 str(out), "--distill", "--epochs", "1", "--quiet"]) == 0
    assert onnx.load(out).graph.output[1].name == "halves"
    assert main(["finetune", str(src), "--data", str(tmp_path / "nolabels.npz"), "-o",
                 str(tmp_path / "x.onnx"), "--quiet"]) == 2
    assert "--distill" in capsys.readouterr().err
    np.savez(tmp_path / "labelled.npz", x=xtr[:256], **{"labels/classes": ytr[:256],
                                                        "labels/halves": _halves(xtr[:256])})
    assert main(["finetune", str(src), "--data", str(tmp_path / "labelled.npz"), "-o",
                 str(tmp_path / "labelled.onnx"), "--loss",
                 "classes=sparse_categorical_crossentropy,halves=mse", "--loss-weights",
                 "halves=2", "--epochs", "1", "--quiet"]) == 0
    assert "loss" in capsys.readouterr().out
    assert main(["finetune", str(src), "--data", str(tmp_path / "labelled.npz"), "-o",
                 str(tmp_path / "listed.onnx"), "--loss",
                 "classes=sparse_categorical_crossentropy,halves=mse", "--loss-weights", "1,2",
                 "--epochs", "1", "--quiet"]) == 0  # weights in output order
    training = json.loads(onnx_metadata(tmp_path / "listed.onnx")["qdq_onnx.training"])
    assert training["loss_weights"] == [1.0, 2.0]
    assert main(["finetune", str(src), "--data", str(tmp_path / "labelled.npz"), "-o",
                 str(tmp_path / "bad.onnx"), "--loss-weights", "1,x", "--quiet"]) == 2
    assert "--loss-weights: expected numbers" in capsys.readouterr().err


def test_per_pixel_class_labels_train_a_segmentation_output():
    """A channels-last [N, H, W, C] output with [N, H, W] class indices: cross-entropy per
    pixel (the classes moved to axis 1 for SoftmaxCrossEntropyLoss), accuracy per pixel."""
    from helpers import G

    g = G(input_shape=("N", 1, 8, 8))
    logits = g.conv("head", g.unary("Relu", "r", g.conv("c", "x", 8)), 3)
    nhwc = g.node("Transpose", "to_nhwc", [logits], perm=[0, 2, 3, 1])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    y = np.digitize(x[:, 0], [0.33, 0.66]).astype(np.int64)  # 3 classes by intensity
    q = quantize_model(g.model([nhwc]), calibration_data=x)
    q.compile(learning_rate=3e-2, schedule="constant")
    history = q.fit(x, y, batch_size=16, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    loss, acc = q.evaluate(x, y)
    assert acc == pytest.approx(np.mean(q.predict(x).argmax(-1) == y)) and acc > 0.6
    emitted = q.export()  # checked against the training graph on a sample
    assert emitted.graph.output[0].type.tensor_type.shape.dim[3].dim_value == 3
    with pytest.raises(QdqError, match=r"class indices of shape \[N, 8, 8\]"):
        q.fit(x, y[:, 0], verbose=0)
