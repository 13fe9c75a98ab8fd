"""Quantization-aware fine-tuning trains the quantized graph: QAT wins back low-bit PTQ
losses, the emitted Q/DQ model equals the training graph, every loss trains, bad settings
are one-line errors, NaN stops cleanly, and fixed-batch models train at any batch."""

import numpy as np
import onnx
import pytest
from helpers import mlp
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy
from qdq_onnx.errors import QdqError, SettingError
from qdq_onnx.finetune import FitConfig, TrainConfig, Trainer, TrainingStopped
from qdq_onnx.graph.sessions import inference_session

pytestmark = pytest.mark.training  # fine-tuning needs onnxruntime-training


def test_qat_recovers_most_of_the_4bit_ptq_loss(digits, float_model):
    xtr, ytr, xte, yte = digits
    fp32 = accuracy(float_model, xte, yte)
    q = quantize_model(float_model, calibration_data=xtr[:512], weight_scheme="int8-4bit")
    ptq = accuracy(q.onnx, xte, yte)
    assert fp32 - ptq >= 0.02, f"4-bit PTQ should lose several points: {fp32} -> {ptq}"
    q.compile(learning_rate=1e-3)
    history = q.fit(xtr, ytr, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    qat = accuracy(q.export(), xte, yte)
    assert qat >= ptq + 0.5 * (fp32 - ptq), (fp32, ptq, qat)


def test_emitted_graph_equals_training_eval_output(digits, float_model):
    xtr, ytr, xte, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:256])
    q.compile(learning_rate=1e-3, learn_scales=True)
    q.fit(xtr, ytr, epochs=1, verbose=0)
    emitted = q.export_fp32()  # the form the training graph is checked against
    onnx.checker.check_model(emitted, full_check=True)
    assert emitted.ir_version <= 10
    # Op for op (no onnxruntime fusions on either side) the two graphs agree bit for bit.
    assert q._training._trainer.check_emitted(emitted, xte) == 0.0
    # With fusions, kernels may differ in the last bit; predictions still agree.
    got = inference_session(emitted.SerializeToString()).run(None, {"x": xte})[0]
    assert np.mean(np.argmax(got, 1) == np.argmax(q.predict(xte), 1)) > 0.99
    ops = {n.op_type for n in emitted.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Clip" not in ops
    meta = {p.key: p.value for p in emitted.metadata_props}
    assert '"learn_scales": true' in meta["qdq_onnx.training"]
    # trained weights differ from the input ones, zero points stay int8 zeros
    zps = [numpy_helper.to_array(t) for t in emitted.graph.initializer
           if t.name.endswith("_zero_point")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_nan_loss_stops_and_keeps_the_last_good_weights(digits, float_model):
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:256])
    trainer = Trainer(q.onnx, TrainConfig(optimizer="adam", learning_rate=1e36))
    with pytest.raises(TrainingStopped, match="last good step"):
        trainer.fit(xtr, ytr, FitConfig(epochs=3, verbose=0))
    assert all(np.isfinite(v).all() for v in trainer.trained_initializers().values())
    assert np.isfinite(trainer.predict(xtr[:8])).all()


@pytest.mark.parametrize("loss,labels_of,softmax", [
    ("categorical_crossentropy", lambda y: np.eye(10, dtype=np.float32)[y], False),
    ("sparse_categorical_crossentropy", lambda y: y, True),
    ("mse", lambda y: np.eye(10, dtype=np.float32)[y], False),
])
def test_other_losses_train(digits, loss, labels_of, softmax):
    xtr, ytr, _, _ = digits
    q = quantize_model(mlp(widths=(32,), softmax=softmax), calibration_data=xtr[:256])
    q.compile(loss=loss, from_logits=not softmax, learning_rate=3e-3, optimizer="adamw")
    h = q.fit(xtr, labels_of(ytr), epochs=3, verbose=0)
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0]


def test_binary_crossentropy_trains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.float32)
    r = np.random.default_rng(2)
    w = numpy_helper.from_array((r.normal(0, 0.1, (64, 1))).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["out"], name="fc")], "b",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    q = quantize_model(m, calibration_data=x[:128])
    q.compile(loss="binary_crossentropy", learning_rate=3e-2)
    h = q.fit(x, y, epochs=10, verbose=0)
    assert h.history["accuracy"][-1] > 0.9


def test_bad_training_settings_are_clear_errors(digits, float_model):
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:64])
    for kwargs, message in [({"learning_rate": 0}, "learning_rate must be a positive"),
                            ({"learning_rate": -1e-3}, "learning_rate must be a positive"),
                            ({"learning_rate": float("nan")}, "learning_rate must be"),
                            ({"optimizer": "adagrad"}, "optimizer must be one of adam"),
                            ({"loss": "hinge"}, "loss must be one of"),
                            ({"schedule": "linear"}, "schedule must be one of"),
                            ({"lerning_rate": 1e-3}, "did you mean 'learning_rate'")]:
        with pytest.raises(SettingError, match=message) as err:
            q.compile(**kwargs)
        assert err.value.setting == next(iter(kwargs))
    q.compile()
    with pytest.raises(QdqError, match="class indices span"):
        q.fit(xtr, ytr + 5, verbose=0)
    with pytest.raises(QdqError, match="1400 samples but 10 labels"):
        q.fit(xtr, ytr[:10], verbose=0)
    with pytest.raises(QdqError, match="soft"):
        q.compile(loss="categorical_crossentropy")
        q.fit(xtr, np.full((1400, 10), 0.1, np.float32), verbose=0)


@pytest.mark.parametrize("op", ["AveragePool", "ConvTranspose"])
def test_ops_without_cpu_gradients_train_through_their_rewrite(op):
    """onnxruntime-training 1.19 has no usable CPU gradient for AveragePool or ConvTranspose;
    the training graph rewrites them (finetune/lowering.py), the loss falls, the emitted file
    keeps the original op and equals the training graph's inference form."""
    from helpers import G

    from qdq_onnx.finetune.fake_quant import lower_to_fake_quant

    g = G(input_shape=("N", 2, 6, 6))
    y = g.unary("Relu", "r", g.conv("c", "x", 4))
    if op == "AveragePool":
        y = g.node("AveragePool", "ap", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        g.channels[y] = 4
    else:
        y = g.convt("up", y, 3)
    out = g.conv("head", y, 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2, 6, 6)).astype(np.float32)
    q = quantize_model(g.model([out]), calibration_data=x)
    train_ops = {n.op_type for n in lower_to_fake_quant(q.onnx).model.graph.node}
    assert op not in train_ops and "Conv" in train_ops
    target = rng.normal(size=(32, 2, 6, 6)).astype(np.float32)
    q.compile(loss="mse", learning_rate=1e-2)
    history = q.fit(x, target, batch_size=8, epochs=4, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0]
    emitted = q.export()  # refused when it differs from the training graph's forward pass
    assert op in {n.op_type for n in emitted.graph.node}
    onnx.checker.check_model(emitted, full_check=True)


def test_fixed_batch_1_model_calibrates_and_fine_tunes_at_batch_8(tmp_path, capsys):
    """A model exported with batch 1 (common for TensorRT): calibration and training run at
    batch 8 on relaxed copies; the written files keep the batch of 1."""
    from helpers import G

    from qdq_onnx.graph.batch import fixed_batch

    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r", g.conv("c0", "x", 4))
    y = g.node("GlobalAveragePool", "gap", [g.conv("c1", a, 4)])
    flat = g.node("Flatten", "flat", [y])
    g.channels[flat] = 4
    model = g.model([flat])
    assert fixed_batch(model) == 1
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 64)
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, src)
    np.savez(data, x=x, labels=labels)
    for cmd in (["insert", str(src), "-o", str(tmp_path / "q.onnx"), "--calib", str(data),
                 "--calib-batch-size", "8"],
                ["finetune", str(tmp_path / "q.onnx"), "--data", str(data), "-o",
                 str(tmp_path / "ft.onnx"), "--batch-size", "8", "--quiet"]):
        assert main(cmd) == 0, capsys.readouterr().err
    out = onnx.load(tmp_path / "ft.onnx")
    assert fixed_batch(out) == 1
    from qdq_onnx.quantize.calibration import runs_relaxed

    assert runs_relaxed(model, x)  # calibration ran batches of 8, not 64 runs of 1
    history = quantize_model(model, calibration_data=x, calibration_batch_size=8)
    history.compile(learning_rate=1e-3)
    assert history.fit(x, labels, batch_size=8, epochs=1, verbose=0).steps == 8


def test_a_learned_scale_driven_below_the_minimum_is_clamped(digits, float_model):
    """A per-tensor (0-d) learned scale pushed under MIN_SCALE comes back at MIN_SCALE, still
    a 0-d float32 array (np.maximum returns a scalar, which onnxruntime refuses)."""
    from qdq_onnx.finetune import TrainConfig, Trainer
    from qdq_onnx.quantize.scales import MIN_SCALE

    q = quantize_model(float_model, calibration_data=digits[0][:256])
    t = Trainer(q.onnx, TrainConfig(learn_scales=True))
    try:
        name = t.graph.activation_scales[0]
        t.backend.set_parameter(name, np.zeros((), np.float32))
        t.refresh_weight_scales()
        value = t.backend.get_parameter(name)
        assert value.shape == () and value.dtype == np.float32
        assert float(value) == np.float32(MIN_SCALE)
    finally:
        t.close()
