"""Checkpoints and resume: a run stopped or killed anywhere continues, from its newest
checkpoint, to the very weights (and history) of the uninterrupted run. Processes are
sequenced on pipes (tests/pause.py), never on the clock."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import mlp

from qdq_onnx import quantize_model
from qdq_onnx.errors import QdqError
from qdq_onnx.finetune import FitConfig, StopAfterSteps, TrainConfig, Trainer
from qdq_onnx.finetune import checkpoints as checkpoints_module

pytestmark = pytest.mark.training  # fine-tuning needs onnxruntime-training

PAUSE = Path(__file__).resolve().parents[1] / "pause.py"
CFG = TrainConfig(learning_rate=1e-3, schedule="cosine")
BATCH = 64
STEPS_PER_EPOCH = int(np.ceil(1400 / BATCH))


def _params(trainer):
    return {k: v.copy() for k, v in trainer.trained_initializers().items()}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def qdq(digits, float_model):
    return quantize_model(float_model, calibration_data=digits[0][:256]).onnx


@pytest.fixture(scope="module")
def uninterrupted(qdq, digits):
    """Two epochs in one go, with validation (keep-best) and periodic checkpoints on."""
    xtr, ytr, xte, yte = digits
    trainer = Trainer(qdq, CFG)
    history = trainer.fit(xtr, ytr, FitConfig(epochs=2, batch_size=BATCH, verbose=0),
                          validation_data=(xte, yte))
    yield _params(trainer), history
    trainer.close()


def _resume(qdq, digits, folder, epochs=2):
    xtr, ytr, xte, yte = digits
    trainer = Trainer(qdq, CFG)
    history = trainer.fit(xtr, ytr, FitConfig(epochs=epochs, batch_size=BATCH, verbose=0,
                                              checkpoint_dir=folder, resume=True),
                          validation_data=(xte, yte))
    return trainer, history


def test_stop_inside_an_epoch_then_resume_is_exact(qdq, digits, uninterrupted, tmp_path):
    xtr, ytr, xte, yte = digits
    first = Trainer(qdq, CFG)
    h1 = first.fit(xtr, ytr, FitConfig(epochs=2, batch_size=BATCH, verbose=0,
                                       checkpoint_dir=tmp_path),
                   validation_data=(xte, yte),
                   callbacks=[StopAfterSteps(STEPS_PER_EPOCH + 5)])  # inside epoch 2
    assert h1.stopped == "interrupted" and h1.steps == STEPS_PER_EPOCH + 5
    second, h2 = _resume(qdq, digits, tmp_path)
    params, h_full = uninterrupted
    assert h2.steps == h_full.steps == 2 * STEPS_PER_EPOCH
    assert h2.history == h_full.history and h2.epoch == [0, 1]
    assert h2.kept == h_full.kept
    _same(params, _params(second))


def test_resume_with_another_model_is_refused(digits, qdq, tmp_path):
    xtr, ytr, _, _ = digits
    Trainer(qdq, TrainConfig()).fit(xtr, ytr, FitConfig(verbose=0, checkpoint_dir=tmp_path))
    other = quantize_model(mlp(widths=(8,)), calibration_data=xtr[:256])
    with pytest.raises(QdqError, match="another model"):
        Trainer(other.onnx, TrainConfig()).fit(
            xtr, ytr, FitConfig(verbose=0, checkpoint_dir=tmp_path, resume=True))


def test_periodic_checkpoints_every_n_steps_keep_the_newest(qdq, digits, tmp_path):
    xtr, ytr, _, _ = digits
    seen = []
    from qdq_onnx.finetune import Callback

    class Seen(Callback):
        def on_checkpoint(self, state, folder):
            seen.append((state.step, folder.name))

    Trainer(qdq, CFG).fit(xtr, ytr, FitConfig(epochs=1, batch_size=BATCH, verbose=0,
                                              checkpoint_dir=tmp_path,
                                              checkpoint_every_steps=7, keep_checkpoints=2),
                          callbacks=[Seen()])
    assert [s for s, _ in seen] == [7, 14, 21, STEPS_PER_EPOCH]  # 22 steps, then the end
    kept = sorted(p.name for p in tmp_path.glob("ckpt-step*"))
    assert kept == [name for _, name in seen[-2:]]
    assert json.loads((tmp_path / "latest.json").read_text())["checkpoint"] == seen[-1][1]


def test_checkpoints_every_m_minutes_by_the_clock(qdq, digits, tmp_path, monkeypatch):
    """The time trigger, on a fake clock that each step moves on by 1 minute: with a period
    of 5 minutes a checkpoint is due every 5 steps, plus the epoch end."""
    xtr, ytr, _, _ = digits
    now = [0.0]
    monkeypatch.setattr(checkpoints_module, "monotonic", lambda: now[0])
    from qdq_onnx.finetune import Callback

    steps = []

    class Seen(Callback):
        def on_step_end(self, state, loss):
            now[0] += 60.0

        def on_checkpoint(self, state, folder):
            steps.append(state.step)

    Trainer(qdq, CFG).fit(xtr, ytr, FitConfig(epochs=1, batch_size=BATCH, verbose=0,
                                              checkpoint_dir=tmp_path,
                                              checkpoint_every_minutes=5.0),
                          callbacks=[Seen()])
    assert steps == [5, 10, 15, 20, STEPS_PER_EPOCH]


def test_the_default_checkpoints_at_least_every_ten_minutes():
    assert FitConfig().checkpoint_every_minutes == 10.0


def _child(point, args):
    return subprocess.Popen([sys.executable, str(PAUSE), point, "--", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_paused(proc):
    line = proc.stdout.readline()
    assert line.strip() == "paused", (line, proc.stderr.read() if proc.poll() else "")


@pytest.fixture()
def cli_files(qdq, digits, tmp_path):
    xtr, ytr, xte, yte = digits
    src = tmp_path / "q.onnx"
    onnx.save(qdq, src)
    np.savez(tmp_path / "train.npz", x=xtr, labels=ytr)
    np.savez(tmp_path / "val.npz", x=xte, labels=yte)
    return src, tmp_path / "train.npz", tmp_path / "val.npz"


def _finetune_args(src, train, val, out, *more):
    return ["finetune", str(src), "--data", str(train), "--val", str(val), "-o", str(out),
            "--epochs", "2", "--batch-size", str(BATCH), "--lr", "1e-3", "--quiet", *more]


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(cli_files, tmp_path):
    """A real SIGKILL of the training process 3 steps after a periodic checkpoint (inside
    epoch 2); `--resume` then writes the same file the uninterrupted command writes."""
    src, train, val = cli_files
    ck, killed_out = tmp_path / "ck", tmp_path / "killed.onnx"
    proc = _child(f"step:{STEPS_PER_EPOCH + 8}",
                  _finetune_args(src, train, val, killed_out, "--checkpoint-dir", str(ck),
                                 "--checkpoint-every-steps", "5"))
    _wait_paused(proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not killed_out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".killed.onnx*"))
    info = json.loads((ck / "latest.json").read_text())
    assert info["step"] == STEPS_PER_EPOCH + 5 and info["epoch"] == 1  # the last period
    resumed = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main",
                              *_finetune_args(src, train, val, killed_out, "--resume", str(ck))],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole.onnx"
    done = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main",
                           *_finetune_args(src, train, val, whole)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # Same weights, scales and training record (steps, epochs, settings): the same file.
    assert whole.read_bytes() == killed_out.read_bytes()


def test_ctrl_c_stops_at_a_step_boundary_then_resume_finishes(cli_files, tmp_path):
    src, train, val = cli_files
    ck, out = tmp_path / "ck", tmp_path / "ft.onnx"
    proc = _child("step:30", _finetune_args(src, train, val, out, "--checkpoint-dir",
                                            str(ck)))
    _wait_paused(proc)
    proc.send_signal(signal.SIGINT)  # asks to stop at the next step boundary
    _, err = proc.communicate(input="\n", timeout=120)  # lets the paused step finish
    assert proc.returncode == 130, err
    assert "interrupted at step 30" in err and "--resume" in err
    onnx.checker.check_model(str(out), full_check=True)
    assert json.loads((ck / "latest.json").read_text())["step"] == 30
    res = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main",
                          *_finetune_args(src, train, val, out, "--resume", str(ck))],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads((ck / "latest.json").read_text())["step"] == 2 * STEPS_PER_EPOCH
