"""Quantization-aware fine-tuning: it trains the quantized graph, the emitted Q/DQ model
equals the training graph, resume is exact, NaN stops cleanly, and the CLI works."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy
from qdq_onnx.errors import QdqError
from qdq_onnx.finetune import TrainConfig, Trainer, TrainingStopped
from qdq_onnx.finetune.schedules import learning_rate
from qdq_onnx.graph.sessions import inference_session


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def mlp(widths=(16, 16, 16), seed=1, softmax=False):
    r = np.random.default_rng(seed)
    dims = [64, *widths, 10]
    inits, nodes, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        inits += [numpy_helper.from_array((r.normal(0, 1, (a, b)) * np.sqrt(2 / a))
                                          .astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"bias{i}")]
        prev = f"a{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [prev], ["out"], name="softmax", axis=-1))
    else:
        nodes[-1].output[0] = "out"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def float_model(digits):
    xtr, ytr, _, _ = digits
    trainer = Trainer(mlp(), TrainConfig(learning_rate=3e-3, weight_decay=0.0))
    trainer.fit(xtr, ytr, epochs=40, verbose=0)
    model = trainer.emit()
    trainer.close()
    return model


def test_qat_recovers_most_of_the_4bit_ptq_loss(digits, float_model):
    xtr, ytr, xte, yte = digits
    fp32 = accuracy(float_model, xte, yte)
    q = quantize_model(float_model, calibration_data=xtr[:512], weight_bits=4)
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
    emitted = q.export()
    onnx.checker.check_model(emitted, full_check=True)
    assert emitted.ir_version <= 10
    # Op for op (no onnxruntime fusions on either side) the two graphs agree bit for bit.
    assert q._trainer.check_emitted(emitted, xte) == 0.0
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


def _params(trainer):
    return {k: v.copy() for k, v in trainer.trained_initializers().items()}


def test_resume_after_interruption_is_exact(digits, float_model, tmp_path):
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:256])
    cfg = TrainConfig(learning_rate=1e-3, schedule="cosine")
    full = Trainer(q.onnx, cfg)
    h_full = full.fit(xtr, ytr, epochs=2, batch_size=64, verbose=0)
    steps_per_epoch = int(np.ceil(1400 / 64))
    first = Trainer(q.onnx, cfg)
    h1 = first.fit(xtr, ytr, epochs=2, batch_size=64, verbose=0, checkpoint_dir=tmp_path,
                   stop_after_steps=steps_per_epoch + 5)  # interrupted inside epoch 2
    assert h1.stopped == "interrupted" and h1.steps == steps_per_epoch + 5
    second = Trainer(q.onnx, cfg)
    h2 = second.fit(xtr, ytr, epochs=2, batch_size=64, verbose=0, checkpoint_dir=tmp_path,
                    resume=True)
    assert h2.steps == h_full.steps == 2 * steps_per_epoch
    assert h2.epoch == [0, 1]
    a, b = _params(full), _params(second)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_with_another_model_is_refused(digits, float_model, tmp_path):
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:256])
    Trainer(q.onnx, TrainConfig()).fit(xtr, ytr, epochs=1, verbose=0, checkpoint_dir=tmp_path)
    other = quantize_model(mlp(widths=(8,)), calibration_data=xtr[:256])
    with pytest.raises(QdqError, match="another model"):
        Trainer(other.onnx, TrainConfig()).fit(xtr, ytr, epochs=1, verbose=0,
                                               checkpoint_dir=tmp_path, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_weights(digits, float_model):
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:256])
    trainer = Trainer(q.onnx, TrainConfig(optimizer="adam", learning_rate=1e36))
    with pytest.raises(TrainingStopped, match="last good step"):
        trainer.fit(xtr, ytr, epochs=3, verbose=0)
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
    for kwargs, message in [({"learning_rate": 0}, "positive"),
                            ({"learning_rate": -1e-3}, "positive"),
                            ({"optimizer": "adagrad"}, "unknown optimizer"),
                            ({"loss": "hinge"}, "unknown loss"),
                            ({"schedule": "linear"}, "unknown schedule")]:
        with pytest.raises(QdqError, match=message):
            q.compile(**kwargs)
    q.compile()
    with pytest.raises(QdqError, match="class indices span"):
        q.fit(xtr, ytr + 5, verbose=0)
    with pytest.raises(QdqError, match="1400 samples but 10 labels"):
        q.fit(xtr, ytr[:10], verbose=0)
    with pytest.raises(QdqError, match="soft"):
        q.compile(loss="categorical_crossentropy")
        q.fit(xtr, np.full((1400, 10), 0.1, np.float32), verbose=0)


def test_schedules():
    assert learning_rate(1.0, 0, 100, "constant") == 1.0
    assert learning_rate(1.0, 0, 100, "cosine") == 1.0
    assert learning_rate(1.0, 50, 100, "cosine") == pytest.approx(0.5)
    assert learning_rate(1.0, 100, 100, "cosine") == pytest.approx(0.0)
    assert learning_rate(1.0, 25, 100, "step", step_size=2, gamma=0.5,
                         steps_per_epoch=10) == 0.5
    assert learning_rate(1.0, 4, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)


def _cli_files(digits, float_model, tmp_path):
    """(calibrated Q/DQ model, train.npz, val.npz) written for the finetune command."""
    xtr, ytr, xte, yte = digits
    src = tmp_path / "q.onnx"
    onnx.save(quantize_model(float_model, calibration_data=xtr[:256]).onnx, src)
    train, val = tmp_path / "train.npz", tmp_path / "val.npz"
    np.savez(train, x=xtr, labels=ytr)
    np.savez(val, x=xte, labels=yte)
    return src, train, val


def test_finetune_cli(digits, float_model, tmp_path, capsys):
    xtr, ytr, xte, yte = digits
    src, train, val = _cli_files(digits, float_model, tmp_path)
    out = tmp_path / "ft.onnx"
    assert main(["finetune", str(src), "--data", str(train), "--val", str(val), "-o",
                 str(out), "--epochs", "2", "--lr", "1e-3", "--schedule", "cosine",
                 "--checkpoint-dir", str(tmp_path / "ck"), "--quiet"]) == 0
    assert "val_accuracy" in capsys.readouterr().out
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert accuracy(model, xte, yte) > 0.9
    assert (tmp_path / "ck" / "latest.json").is_file()
    np.savez(tmp_path / "nolabels.npz", x=xtr)
    assert main(["finetune", str(src), "--data", str(tmp_path / "nolabels.npz"), "-o",
                 str(tmp_path / "z.onnx")]) == 2
    assert "no labels" in capsys.readouterr().err
    assert main(["finetune", str(src), "--data", str(train), "-o", str(tmp_path / "z.onnx"),
                 "--lr", "0"]) == 2
    assert not (tmp_path / "z.onnx").exists()


def test_ctrl_c_stops_at_a_step_boundary_and_resume_continues(digits, float_model, tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    xtr, ytr, _, _ = digits
    src = tmp_path / "q.onnx"
    onnx.save(quantize_model(float_model, calibration_data=xtr[:256]).onnx, src)
    np.savez(tmp_path / "train.npz", x=xtr, labels=ytr)
    out, ck = tmp_path / "ft.onnx", tmp_path / "ck"
    cmd = [sys.executable, "-m", "qdq_onnx.cli.main", "finetune", str(src), "--data",
           str(tmp_path / "train.npz"), "-o", str(out), "--epochs", "100000", "--batch-size",
           "8", "--checkpoint-dir", str(ck), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ck / "latest.json").exists() and time.time() < deadline:
        time.sleep(0.2)  # wait until the first epoch's checkpoint exists
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    onnx.checker.check_model(str(out), full_check=True)
    info = json.loads((ck / "latest.json").read_text())
    assert info["step"] > 0
    stopped_at = info["epoch"]
    resumed = [sys.executable, "-m", "qdq_onnx.cli.main", "finetune", str(src), "--data",
               str(tmp_path / "train.npz"), "-o", str(out), "--epochs", str(stopped_at + 1),
               "--batch-size", "8", "--resume", str(ck), "--quiet"]
    res = subprocess.run(resumed, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    steps_per_epoch = int(np.ceil(1400 / 8))
    assert json.loads((ck / "latest.json").read_text())["step"] == \
        (stopped_at + 1) * steps_per_epoch


def test_average_pool_is_refused_for_training():
    from helpers import G

    g = G(input_shape=(1, 2, 6, 6))
    y = g.node("AveragePool", "ap", [g.conv("c", "x", 4)], kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    g.channels[y] = 4
    q = quantize_model(g.model([y]))
    with pytest.raises(QdqError, match="AveragePool cannot be fine-tuned"):
        q.compile(loss="mse")


def test_diverging_fine_tuning_returns_the_starting_model_and_says_so(digits, float_model,
                                                                       tmp_path, capsys):
    """A learning rate far too high wrecks the weights without a NaN; with validation data
    the result is the starting model, bit for bit, and the command says why."""
    _, _, xte, yte = digits
    src, train, val = _cli_files(digits, float_model, tmp_path)
    start_model = onnx.load(src)
    out = tmp_path / "ft.onnx"
    assert main(["finetune", str(src), "--data", str(train), "--val", str(val), "-o",
                 str(out), "--epochs", "2", "--lr", "5", "--optimizer", "sgd",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "kept the starting weights" in err
    start = {t.name: t.raw_data for t in start_model.graph.initializer}
    tuned = {t.name: t.raw_data for t in onnx.load(out).graph.initializer}
    assert tuned == start
    assert accuracy(onnx.load(out), xte, yte) == accuracy(start_model, xte, yte)


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
    from qdq_onnx.quantize.calibration import _runs_relaxed

    assert _runs_relaxed(model, x)  # calibration ran batches of 8, not 64 runs of 1
    history = quantize_model(model, calibration_data=x, calibration_batch_size=8)
    history.compile(learning_rate=1e-3)
    assert history.fit(x, labels, batch_size=8, epochs=1, verbose=0).steps == 8
