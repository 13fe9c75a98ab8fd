"""The `finetune` command: trains and writes a checked file, keeps the starting weights when
training only makes them worse, refuses bad settings by their flags, and keeps the remainder
type the input records."""

import json

import numpy as np
import onnx
import pytest

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy

pytestmark = pytest.mark.training  # fine-tuning needs onnxruntime-training


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
    for flags, message in [(["--lr", "0"], "--lr must be a positive number"),
                           (["--epochs", "0"], "--epochs must be a positive integer"),
                           (["--checkpoint-every-minutes", "-1"],
                            "--checkpoint-every-minutes must be a positive number"),
                           (["--keep-checkpoints", "0"], "--keep-checkpoints must be"),
                           (["--validation-split", "1.5"], "--validation-split must be in")]:
        assert main(["finetune", str(src), "--data", str(train), "-o",
                     str(tmp_path / "z.onnx"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "z.onnx").exists()


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
                 "--quiet", "--high-precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "kept the starting weights" in err
    start = {t.name: t.raw_data for t in start_model.graph.initializer}
    tuned = {t.name: t.raw_data for t in onnx.load(out).graph.initializer}
    assert tuned == start
    assert accuracy(onnx.load(out), xte, yte) == accuracy(start_model, xte, yte)




def _remainder(path):
    """(the plan's recorded remainder type, the reduced float types the file holds)."""
    model = onnx.load(path)
    plan = json.loads(next(p.value for p in model.metadata_props if p.key == "qdq_onnx.plan"))
    reduced = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    held = {t.data_type for t in model.graph.initializer} | {
        a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute
        if a.name == "to"}
    return plan["high_precision"], held & reduced


def test_finetune_keeps_the_remainder_type_the_input_records(digits, tmp_path, capsys):
    """A file inserted with --high-precision fp32 stays FP32 through finetune without the
    flag; the flag still wins; a file recording no type gets the rules' default (FP16)."""
    from helpers import mlp

    xtr, ytr, _, _ = digits
    onnx.save(mlp(), tmp_path / "fp32.onnx")
    np.save(tmp_path / "calib.npy", xtr[:128])
    np.savez(tmp_path / "train.npz", x=xtr[:128], labels=ytr[:128])
    q = tmp_path / "q.onnx"
    assert main(["insert", str(tmp_path / "fp32.onnx"), "-o", str(q), "--calib",
                 str(tmp_path / "calib.npy"), "--high-precision", "fp32"]) == 0
    assert _remainder(q) == ("fp32", set())

    def finetune(src, out, *flags):
        assert main(["finetune", str(src), "--data", str(tmp_path / "train.npz"), "-o",
                     str(tmp_path / out), "--epochs", "1", "--quiet", *flags]) == 0
        return _remainder(tmp_path / out)

    capsys.readouterr()
    assert finetune(q, "ft.onnx") == ("fp32", set())
    assert "float remainder typed fp16" not in capsys.readouterr().err
    assert finetune(q, "ft16.onnx", "--high-precision", "fp16") == (
        "fp16", {onnx.TensorProto.FLOAT16})
    assert finetune(tmp_path / "ft16.onnx", "again.onnx") == (  # fp16 recorded: kept
        "fp16", {onnx.TensorProto.FLOAT16})
    unrecorded = onnx.load(q)
    plan = next(p for p in unrecorded.metadata_props if p.key == "qdq_onnx.plan")
    recorded = json.loads(plan.value)
    del recorded["high_precision"]  # a plan from before the remainder was recorded
    plan.value = json.dumps(recorded)
    onnx.save(unrecorded, tmp_path / "unrecorded.onnx")
    assert finetune(tmp_path / "unrecorded.onnx", "default.onnx") == (
        "fp16", {onnx.TensorProto.FLOAT16})
