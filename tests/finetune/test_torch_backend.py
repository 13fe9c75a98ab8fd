"""The torch backend trains what the onnxruntime-training backend trains: the same loss and
gradients at steps 1 and 2 from the same weights and batch (the fake-quant MLP and the
float training graphs of real pretrained files), the same optimizer arithmetic, exact
resume; and it trains what onnxruntime-training cannot (control flow, ops without
gradients there), choosing itself where onnxruntime-training is missing."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
from real_pool import BY_NAME as REAL
from torch_parity import differences, two_steps

from qdq_onnx import pipeline, quantize_model
from qdq_onnx.finetune import FitConfig, StopAfterSteps, TrainConfig, Trainer

pytestmark = pytest.mark.torch
training = pytest.mark.training  # the comparisons need onnxruntime-training too


def _assert_same_steps(a, b, loss_tol, grad_tol, tensor_tol):
    found = differences(a, b)
    assert all(f <= t for f, t in zip(found, (loss_tol, grad_tol, tensor_tol))), found


@training
def test_two_adam_steps_of_the_fake_quant_mlp_match_onnxruntime_training(digits,
                                                                          float_model):
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:64]).onnx
    config = {"learning_rate": 1e-3, "optimizer": "adamw"}
    a = two_steps(q, xtr[:64], ytr[:64], "onnxruntime", config)
    b = two_steps(q, xtr[:64], ytr[:64], "torch", config)
    # measured (2 cores, CPU): see docs/finetuning.md (Fine-tuning engines)
    _assert_same_steps(a, b, 1e-4, 1e-3, 1e-3)


FLOAT_FAST = {"ppocr_cls", "mtcnn_onet"}


@training
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FLOAT_FAST else
                                               (pytest.mark.slow,))
                                  for n in sorted(REAL) if n not in ("magika", "basic_pitch")])
def test_two_steps_on_real_files_match_onnxruntime_training(name):
    """The float training graph of each real file, distilled towards its Q/DQ model (SGD):
    the same autograd on both backends. On the fake-quant graph the two engines' float32
    sums differ in the last bit, which moves the odd value across a rounding boundary of a
    quantizer (test_torch_ops checks every node on its own instead)."""
    m = REAL[name]
    model = onnx.load(str(m.path()))
    inserted = pipeline.insert(model, data=m.inputs(8))
    config = {"distill": True, "learning_rate": 1e-4, "optimizer": "sgd"}
    x = m.inputs(1 if name in ("yolox_ddddocr", "picodet_layout") else 4)  # batch 1 graphs
    a = two_steps(inserted.float_model, x, None, "onnxruntime", config, teacher=inserted.qdq)
    b = two_steps(inserted.float_model, x, None, "torch", config, teacher=inserted.qdq)
    # measured (2 cores, CPU; docs/finetuning.md): loss <= 2.3e-4, gradient <= 2.5e-3,
    # tensor <= 6.8e-3
    # (ppocr_det: onnxruntime-training trains its rewrites of Resize and ConvTranspose)
    _assert_same_steps(a, b, 1e-3, 5e-3, 2e-2)


@training
def test_the_optimizers_step_as_onnxruntime_training_steps(digits, float_model):
    """The same gradients given to both: AdamW (weight decay) and SGD move the weights
    alike over three steps."""
    q = quantize_model(float_model, calibration_data=digits[0][:64]).onnx
    rng = np.random.default_rng(3)
    for optimizer in ("adamw", "sgd"):
        trainers = [Trainer(q, TrainConfig(backend=b, optimizer=optimizer,
                                           weight_decay=0.05, learning_rate=1e-2))
                    for b in ("onnxruntime", "torch")]
        names = list(trainers[0].graph.trainable)
        args = trainers[0].args(trainers[0]._inputs(digits[0][:8]), slice(0, 8),
                                {"labels": digits[1][:8]})
        for _ in range(3):
            grads = [rng.standard_normal(trainers[0].backend.get_parameter(n).shape)
                     .astype(np.float32) for n in names]
            for t in trainers:
                t.backend.forward_backward(args)
                t.backend.set_gradients(names, grads)
                t.backend.step(1e-2)
        for n in names:
            np.testing.assert_allclose(trainers[1].backend.get_parameter(n),
                                       trainers[0].backend.get_parameter(n), atol=2e-6,
                                       err_msg=f"{optimizer} {n}")
        for t in trainers:
            t.close()


def test_a_stopped_run_resumes_to_the_uninterrupted_weights(digits, float_model, tmp_path):
    xtr, ytr, xte, yte = digits
    q = quantize_model(float_model, calibration_data=xtr[:64]).onnx
    config = TrainConfig(backend="torch", learning_rate=1e-3)
    fit = FitConfig(epochs=2, batch_size=128, verbose=0)

    def weights(trainer):
        return {k: v.copy() for k, v in trainer.trained_initializers().items()}

    whole = Trainer(q, config)
    whole.fit(xtr, ytr, fit, validation_data=(xte, yte))
    first = Trainer(q, config)
    stopped = first.fit(xtr, ytr, replace(fit, checkpoint_dir=tmp_path),
                        validation_data=(xte, yte), callbacks=[StopAfterSteps(15)])
    assert stopped.stopped == "interrupted" and stopped.steps == 15
    second = Trainer(q, config)
    second.fit(xtr, ytr, replace(fit, checkpoint_dir=tmp_path, resume=True),
               validation_data=(xte, yte))
    a, b = weights(whole), weights(second)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for t in (whole, first, second):
        t.close()


def test_hard_sigmoid_resize_and_conv_transpose_train_as_they_are(tmp_path, monkeypatch):
    """The DBNet text detector (HardSigmoid, Resize, ConvTranspose) fine-tunes with the
    lowering for onnxruntime-training switched off entirely: torch differentiates them."""
    from qdq_onnx.finetune import lowering_pass

    def no_lowering(self, node, default):
        raise AssertionError("the torch backend must not need the lowering")

    monkeypatch.setattr(lowering_pass.Lowering, "nodes", no_lowering)
    m = REAL["ppocr_det"]
    inserted = pipeline.insert(onnx.load(str(m.path())), data=m.inputs(8))
    x = m.inputs(8)
    t = Trainer(inserted.qdq, TrainConfig(backend="torch", distill=True, learning_rate=1e-4))
    history = t.fit(x, None, FitConfig(epochs=2, batch_size=4, verbose=0))
    assert {"HardSigmoid", "Resize", "ConvTranspose"} <= {
        n.op_type for n in t.graph.model.graph.node}
    assert np.all(np.isfinite(history.history["loss"])) and history.steps == 4
    before = {i.name: onnx.numpy_helper.to_array(i) for i in inserted.qdq.graph.initializer}
    moved = [n for n, v in t.trained_initializers().items()
             if n in before and not np.array_equal(before[n], v)]
    assert len(moved) > 50
    emitted = t.emit(t.sample(4))  # checked against the training graph on the way
    t.close()
    path = tmp_path / "tuned.onnx"
    onnx.save(emitted, path)
    from qdq_onnx.cli.main import main

    assert main(["lint", str(path)]) == 0


def test_finetune_says_which_backend_trained(tmp_path, float_model, digits, capsys):
    from qdq_onnx.cli.main import main

    q, data = tmp_path / "q.onnx", tmp_path / "d.npz"
    onnx.save(quantize_model(float_model, calibration_data=digits[0][:64]).onnx, q)
    np.savez(data, x=digits[0][:128], labels=digits[1][:128])
    code = main(["finetune", str(q), "--data", str(data), "--backend", "torch", "--quiet",
                 "-o", str(tmp_path / "o.onnx")])
    assert code == 0
    assert "trained by torch (PyTorch 2." in capsys.readouterr().out
    assert main(["lint", str(tmp_path / "o.onnx")]) == 0  # a standard Q/DQ file, clean
    assert " 0 errors, 0 warnings" in capsys.readouterr().out


# A child without onnxruntime-training (a stand-in `onnxruntime` package): `auto` trains on
# torch; without torch either, finetune names both extras in one line before reading data.
CHILD = """
import sys, tempfile, types
fake = types.ModuleType("onnxruntime")
fake.__file__ = tempfile.mkdtemp() + "/__init__.py"
sys.modules["onnxruntime"] = fake
if sys.argv[1] == "no-torch":
    sys.modules["torch"] = None
from qdq_onnx.finetune.backend import resolve_backend, require_backend
print(resolve_backend("auto"))
require_backend("auto")
"""


def test_auto_is_torch_without_onnxruntime_training_and_one_line_without_either():
    ok = subprocess.run([sys.executable, "-c", CHILD, "torch"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.split() == ["torch"], ok.stderr
    none = subprocess.run([sys.executable, "-c", CHILD, "no-torch"], capture_output=True,
                          text=True, timeout=120)
    assert none.returncode != 0
    last = none.stderr.strip().splitlines()[-1]
    assert "qdq-onnx[train]" in last and "qdq-onnx[torch]" in last


def test_torch_is_imported_only_to_fine_tune(tmp_path, float_model):
    model = tmp_path / "m.onnx"
    onnx.save(float_model, model)
    code = ("import sys\nfrom qdq_onnx.cli.main import main\n"
            f"main(['insert', {str(model)!r}, '-o', {str(tmp_path / 'q.onnx')!r}])\n"
            f"main(['lint', {str(tmp_path / 'q.onnx')!r}])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def _softplus_mlp() -> onnx.ModelProto:
    """x[?,8] -> MatMul -> Softplus -> MatMul -> y[?,4]: onnxruntime-training 1.19 has no
    gradient builder for Softplus (docs/gradient-coverage.md)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Softplus", ["h"], ["s"], name="act"),
             helper.make_node("MatMul", ["s", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "softplus_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@training
def test_auto_trains_with_torch_what_onnxruntime_training_cannot(monkeypatch):
    """`auto` moves to torch before any step, and says why; a named backend never does,
    nor does `auto` without torch."""
    from qdq_onnx.errors import QdqError
    from qdq_onnx.finetune.backend import torch_imports

    x = np.random.default_rng(4).normal(size=(32, 8)).astype(np.float32)
    q = pipeline.insert(_softplus_mlp(), data=x).qdq
    with pytest.raises(QdqError, match="act: onnxruntime-training cannot differentiate "
                                       "Softplus .*--backend torch"):
        Trainer(q, TrainConfig(backend="onnxruntime", distill=True))
    t = Trainer(q, TrainConfig(distill=True, learning_rate=1e-3))
    assert t.backend_name == "torch" and "Softplus" in t.fallback_reason
    history = t.fit(x, None, FitConfig(epochs=1, batch_size=8, verbose=0))
    assert history.steps == 4 and np.isfinite(history.history["loss"]).all()
    t.emit(t.sample(8))  # checked against the training graph
    t.close()
    monkeypatch.setattr(torch_imports, "available", lambda: False)
    with pytest.raises(QdqError, match="differentiate Softplus"):
        Trainer(q, TrainConfig(distill=True))
