"""Synchronous data-parallel fine-tuning (`finetune --workers 2`, MPI ranks): 2 ranks with
batch B train the weights 1 process trains with batch 2B; a killed rank stops the run with
one line naming it, and the run resumes from its checkpoint with 2 ranks or 1; a rank that
hangs makes the others stop at the collective timeout. Processes are sequenced by their
exits and by the faults tests/pause.py injects at a given step, never by the clock."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.finetune import TrainConfig, Trainer

pytestmark = pytest.mark.training  # fine-tuning needs onnxruntime-training

PAUSE = Path(__file__).resolve().parents[1] / "pause.py"
N = 1345  # 21 global batches of 64 and one of a single sample: a rank trains a placeholder
# float32 reduction order (a sum of two halves vs one sum over the batch) is the only
# difference: SGD stays within 1e-6; Adam divides by sqrt(v), so a component whose gradient
# is near zero can move by a fraction of the learning rate (1e-3): 1e-4 is 10% of one step.
TOLERANCE = {"sgd": 1e-6, "adam": 1e-4}


@pytest.fixture(scope="module")
def files(digits, float_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("data-parallel")
    xtr, ytr, xte, yte = digits
    src = folder / "q.onnx"
    onnx.save(quantize_model(float_model, calibration_data=xtr[:256]).onnx, src)
    np.savez(folder / "train.npz", x=xtr[:N], labels=ytr[:N])
    np.savez(folder / "val.npz", x=xte, labels=yte)
    return src, folder


def _args(files, out, batch, workers, *extra, val=True):
    src, folder = files
    validation = ["--val", str(folder / "val.npz")] if val else []
    return ["finetune", str(src), "--data", str(folder / "train.npz"), *validation, "-o",
            str(out), "--batch-size", str(batch), "--workers", str(workers),
            "--high-precision", "fp32", "--quiet", *extra]


def _weights(path):
    return {t.name: numpy_helper.to_array(t).astype(np.float64)
            for t in onnx.load(path).graph.initializer}


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in a)


def _training_record(path):
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    return json.loads(next(v for k, v in meta.items() if "train" in k))


@pytest.mark.parametrize("optimizer,flags", [
    ("sgd", ["--lr", "0.05", "--schedule", "constant"]),
    ("adam", ["--lr", "1e-3", "--schedule", "cosine"]),
    pytest.param("sgd", ["--lr", "0.05", "--schedule", "constant", "--backend", "torch"],
                 id="sgd-torch", marks=pytest.mark.torch)])
def test_two_ranks_of_batch_b_train_what_one_trains_with_2b(files, tmp_path, optimizer,
                                                              flags, capsys):
    one, two = tmp_path / "one.onnx", tmp_path / "two.onnx"
    common = ["--epochs", "2", "--optimizer", optimizer, *flags]
    assert main(_args(files, one, 64, 1, *common)) == 0
    out_one = capsys.readouterr().out
    assert main(_args(files, two, 32, 2, *common)) == 0
    out_two = capsys.readouterr().out
    assert "44 steps" in out_one and "44 steps" in out_two  # 2 x ceil(1345 / 64)
    assert _max_difference(_weights(one), _weights(two)) <= TOLERANCE[optimizer]
    assert _max_difference(_weights(one), _weights(files[0])) > 100 * TOLERANCE[optimizer]
    # the reduced validation figures and running loss print the same
    assert out_one.split("(completed);")[1] == out_two.split("(completed);")[1]


def test_the_default_fp16_remainder_is_typed_by_every_rank(files, tmp_path):
    """The range guard after training reads the data on every rank (a collective); rank 0
    writes the same file one process writes from the same weights."""
    src, folder = files
    paths = [tmp_path / f"typed-{w}.onnx" for w in (1, 2)]
    for workers, batch, out in zip((1, 2), (64, 32), paths):
        args = _args(files, out, batch, workers, "--epochs", "1", "--steps-per-epoch", "2",
                     "--optimizer", "sgd", "--lr", "0.01", val=False)
        args.remove("fp32")
        args.remove("--high-precision")
        assert main(args) == 0
    typed = [onnx.load(p) for p in paths]
    assert typed[0].graph.initializer[0].data_type == onnx.TensorProto.FLOAT16
    assert _max_difference(_weights(paths[0]), _weights(paths[1])) <= 1e-3  # FP16 steps


def test_learned_scales_are_reduced_like_any_parameter(files, tmp_path):
    one, two = tmp_path / "one.onnx", tmp_path / "two.onnx"
    common = ["--epochs", "1", "--steps-per-epoch", "1", "--learn-scales", "--lr", "1e-3"]
    assert main(_args(files, one, 64, 1, *common, val=False)) == 0
    assert main(_args(files, two, 32, 2, *common, val=False)) == 0
    a, b, start = _weights(one), _weights(two), _weights(files[0])
    scales = [k for k in a if k.endswith("_scale") and a[k].size == 1
              and not np.array_equal(a[k], start[k])]
    assert scales, "no activation scale was trained"
    for k in scales:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)


def test_the_gradient_written_back_is_the_one_applied(files):
    """onnxruntime-training 1.19.2: an SGD step applies exactly the gradient
    `set_gradients` wrote (the reduced one), not the one the backward computed."""
    src, folder = files
    data = np.load(folder / "train.npz")
    t = Trainer(onnx.load(src), TrainConfig(optimizer="sgd", learning_rate=0.1,
                                            schedule="constant"))
    try:
        b, names = t.backend, list(t.graph.trainable)
        feeds, targets = t._labelled(data["x"][:32], data["labels"][:32], "training")
        before = {n: b.get_parameter(n).copy() for n in names}
        b.forward_backward(t.args(feeds, slice(0, 32), targets))
        computed = [g.copy() for g in b.gradients(names)]
        written = [np.full_like(g, 0.5) for g in computed]
        b.set_gradients(names, written)
        assert all(np.array_equal(w, g) for w, g in zip(written, b.gradients(names)))
        assert not np.array_equal(computed[0], written[0])
        b.step(0.1)
        for n, g in zip(names, written):
            np.testing.assert_allclose(b.get_parameter(n), before[n] - 0.1 * g, atol=1e-6)
    finally:
        t.close()


def _run(args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_killed_rank_stops_the_run_which_resumes_with_two_ranks_or_one(files, tmp_path):
    folder = tmp_path / "ck"
    uninterrupted = tmp_path / "full.onnx"
    common = ["--epochs", "2", "--lr", "1e-3"]
    assert main(_args(files, uninterrupted, 32, 2, *common)) == 0
    killed = _run([str(PAUSE), "kill-rank:1:step:5", "--",
                   *_args(files, tmp_path / "k.onnx", 32, 2, *common, "--checkpoint-dir",
                          str(folder), "--checkpoint-every-steps", "3")])
    assert killed.returncode == 4, killed.stderr
    errors = [line for line in killed.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "rank 1 (pid" in errors[0] and "died" in errors[0], \
        killed.stderr
    assert "signal 9" in errors[0].lower()
    assert not (tmp_path / "k.onnx").exists()
    assert json.loads((folder / "latest.json").read_text())["step"] == 3
    shutil.copytree(folder, tmp_path / "ck1")
    again = tmp_path / "again.onnx"
    assert main(_args(files, again, 32, 2, *common, "--resume", str(folder))) == 0
    assert _max_difference(_weights(again), _weights(uninterrupted)) == 0.0
    alone = tmp_path / "alone.onnx"
    assert main(_args(files, alone, 32, 1, *common, "--resume", str(tmp_path / "ck1"))) == 0
    # 3 steps of 64 done; the rest of epoch 1 in batches of 32, then a whole epoch of 32
    steps = 3 + int(np.ceil((N - 3 * 64) / 32)) + int(np.ceil(N / 32))
    assert _training_record(alone)["steps"] == steps


def test_a_ctrl_c_on_one_rank_stops_all_at_the_same_step_and_resumes_exactly(files,
                                                                             tmp_path):
    """SIGINT reaches rank 1 alone after step 5: the ranks agree on the stop before step 6,
    rank 0 checkpoints and writes the weights reached, and the resumed run ends with the
    uninterrupted run's weights."""
    folder, common = tmp_path / "ck", ["--epochs", "2", "--lr", "1e-3"]
    uninterrupted = tmp_path / "full.onnx"
    assert main(_args(files, uninterrupted, 32, 2, *common)) == 0
    stopped = _run([str(PAUSE), "interrupt-rank:1:step:5", "--",
                    *_args(files, tmp_path / "i.onnx", 32, 2, *common, "--checkpoint-dir",
                           str(folder))])
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted at step 5" in stopped.stderr
    assert json.loads((folder / "latest.json").read_text())["step"] == 5
    assert _training_record(tmp_path / "i.onnx")["steps"] == 5
    again = tmp_path / "again.onnx"
    assert main(_args(files, again, 32, 2, *common, "--resume", str(folder))) == 0
    assert _max_difference(_weights(again), _weights(uninterrupted)) == 0.0


def test_a_hung_rank_stops_every_rank_at_the_collective_timeout(files, tmp_path):
    hung = _run([str(PAUSE), "hang-rank:1:step:2", "--",
                 *_args(files, tmp_path / "h.onnx", 32, 2, "--epochs", "1",
                        # far above any honest wait of this tiny model, even on a loaded
                        # machine: only the hung rank can make a collective last 10 s
                        "--collective-timeout", "10")], timeout=180)
    assert hung.returncode == 4, hung.stderr
    errors = [line for line in hung.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "rank 0: the stop check before step 3 waited 10 s" in errors[0]
    assert not (tmp_path / "h.onnx").exists()


def test_the_python_api_under_an_mpi_launcher_trains_the_same(files, tmp_path):
    """`mpiexec -n 2 python script.py`, the documented path on several machines: the
    pipeline API joins the launcher's ranks; only rank 0 writes."""
    from qdq_onnx.parallel.launch import mpiexec

    src, folder = files
    one, two = tmp_path / "one.onnx", tmp_path / "two.onnx"
    script = Path(__file__).with_name("api_worker.py")
    alone = _run([str(script), str(src), str(folder / "train.npz"), str(one), "64"])
    assert alone.returncode == 0, alone.stderr
    ranks = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script), str(src),
                            str(folder / "train.npz"), str(two), "32"],
                           capture_output=True, text=True, timeout=300)
    assert ranks.returncode == 0, ranks.stderr
    # mpiexec forwards each rank's output on its own: two lines may arrive interleaved
    assert sorted(re.findall(r"rank \d+ of \d+: \d+ steps", ranks.stdout)) == [
        "rank 0 of 2: 22 steps", "rank 1 of 2: 22 steps"]
    assert not re.sub(r"rank \d+ of \d+: \d+ steps", "", ranks.stdout).strip()
    assert alone.stdout.strip() == "rank 0 of 1: 22 steps"
    assert _max_difference(_weights(one), _weights(two)) <= TOLERANCE["sgd"]


def test_ctrl_c_to_the_launcher_reaches_every_rank(files, tmp_path):
    """SIGINT to `qdq-onnx finetune --workers 2` (its epoch line, read from the pipe, says
    training runs): mpiexec forwards it, every rank stops at the same step, rank 0 writes."""
    import signal

    out = tmp_path / "i.onnx"
    args = _args(files, out, 32, 2, "--epochs", "1000", "--checkpoint-dir",
                 str(tmp_path / "ck"))
    args.remove("--quiet")
    proc = subprocess.Popen([sys.executable, "-m", "qdq_onnx", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("epoch 1/1000")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and out.is_file()
    step = json.loads((tmp_path / "ck" / "latest.json").read_text())["step"]
    assert _training_record(out)["steps"] == step > 0
