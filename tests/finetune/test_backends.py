"""The training engine is a setting: TrainConfig(backend=NAME) picks a registered backend;
an unknown one is a setting error; without onnxruntime-training the default backend fails
with one line naming the extra, before any data is read."""

import subprocess
import sys

import onnx
import pytest

from qdq_onnx import quantize_model
from qdq_onnx.errors import SettingError
from qdq_onnx.finetune import FitConfig, TrainConfig, Trainer
from qdq_onnx.finetune.backend import BACKENDS, register_backend


@pytest.mark.training
def test_a_registered_backend_is_selected_by_the_config(digits, float_model, monkeypatch):
    calls = []

    def recording(graph, loss, config, work_dir):
        backend = BACKENDS["onnxruntime"](graph, loss, config, work_dir)
        original = backend.forward_backward

        def forward_backward(args):
            calls.append(len(args[0]))
            return original(args)
        backend.forward_backward = forward_backward
        return backend

    monkeypatch.setitem(BACKENDS, "recording", None)
    register_backend("recording", recording)
    xtr, ytr, _, _ = digits
    q = quantize_model(float_model, calibration_data=xtr[:64])
    trainer = Trainer(q.onnx, TrainConfig(backend="recording", learning_rate=1e-3))
    trainer.fit(xtr[:256], ytr[:256], FitConfig(batch_size=64, verbose=0))
    trainer.close()
    assert calls == [64, 64, 64, 64]


def test_an_unknown_backend_is_a_setting_error():
    with pytest.raises(SettingError, match="backend must be one of auto, onnxruntime, torch") \
            as err:
        TrainConfig(backend="jax")
    assert err.value.setting == "backend"
    with pytest.raises(TypeError):
        register_backend("bad", "not callable")


# A child whose `onnxruntime` has no training package (plain onnxruntime): finetune with
# the onnxruntime backend must say which extra to install and exit 2 before it reads any
# data (`auto` would choose torch there: test_torch_backend.py).
PLAIN_RUNTIME = """
import sys, tempfile, types
fake = types.ModuleType("onnxruntime")
fake.__file__ = tempfile.mkdtemp() + "/__init__.py"
sys.modules["onnxruntime"] = fake
from qdq_onnx.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_onnxruntime_training_finetune_is_one_line(tmp_path, float_model):
    model = tmp_path / "q.onnx"
    onnx.save(quantize_model(float_model).onnx, model)
    missing_data = tmp_path / "never-read.npz"
    res = subprocess.run([sys.executable, "-c", PLAIN_RUNTIME, "finetune", str(model),
                          "--data", str(missing_data), "-o", str(tmp_path / "o.onnx"),
                          "--backend", "onnxruntime"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "qdq-onnx[train]" in lines[0] and "Python 3.10-3.12" in lines[0]
    assert not (tmp_path / "o.onnx").exists()
