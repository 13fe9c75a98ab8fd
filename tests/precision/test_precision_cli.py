"""The float-remainder and FP8 options of the command line: insert, calibrate, finetune,
inspect, lint and rules."""

import json

import numpy as np
import onnx
import pytest
from helpers import fp8_cnn, fp16_overflow_model, small_classifier

from qdq_onnx.cli.main import main

X = np.random.default_rng(0).normal(size=(32, 3, 8, 8)).astype(np.float32)
F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


@pytest.fixture()
def files(tmp_path):
    onnx.save(small_classifier(), tmp_path / "fp32.onnx")
    np.save(tmp_path / "x.npy", X)
    onnx.save(fp16_overflow_model(), tmp_path / "overflow.onnx")
    np.save(tmp_path / "xo.npy", np.random.default_rng(3).normal(size=(64, 16)).astype(
        np.float32))
    return tmp_path


def _types(path):
    m = onnx.load(path)
    io = [v.type.tensor_type.elem_type for v in (*m.graph.input, *m.graph.output)]
    scales = {t.data_type for t in m.graph.initializer if t.name.endswith("_scale")}
    return io, scales, m


@pytest.mark.parametrize("flags, io, scale", [
    ([], [F32, F32], {F16}),
    (["--high-precision", "fp32"], [F32, F32], {F32}),
    (["--no-keep-io-types"], [F16, F16], {F16}),
    (["--high-precision", "bf16"], [F32, F32], {onnx.TensorProto.BFLOAT16}),
])
def test_insert_types_the_remainder_as_asked(files, capsys, flags, io, scale):
    out = files / "q.onnx"
    assert main(["insert", str(files / "fp32.onnx"), "-o", str(out), "--calib",
                 str(files / "x.npy"), *flags]) == 0
    got_io, got_scales, m = _types(out)
    assert (got_io, got_scales) == (io, scale)
    onnx.checker.check_model(m, full_check=True)
    printed = capsys.readouterr()
    kind = flags[1] if flags and flags[0] == "--high-precision" else "fp16"
    assert f"float remainder {kind}" in printed.out


def test_explain_inspect_lint_and_report_show_the_fp32_islands(files, capsys):
    out = files / "q.onnx"
    assert main(["insert", str(files / "overflow.onnx"), "-o", str(out), "--calib",
                 str(files / "xo.npy"), "--explain", "--plan", str(files / "plan.json")]) == 0
    explained = capsys.readouterr().out
    assert "fp32   square (Mul)  TRT-H001:" in explained and "fp32   root (Sqrt)" in explained
    plan = json.loads((files / "plan.json").read_text())
    assert plan["high_precision"] == "fp16"
    assert [k["node"] for k in plan["kept_fp32"]] == ["square", "root"]
    assert main(["inspect", str(out)]) == 0
    inspected = capsys.readouterr().out
    assert "float remainder fp16" in inspected and "square (Mul)  TRT-H001" in inspected
    assert main(["lint", str(out)]) == 0
    linted = capsys.readouterr().out
    assert "fp32    TRT-H001 square (Mul)" in linted and "2 FP32 by the range guard" in linted
    assert main(["report", str(out), "-o", str(files / "r.html")]) == 0
    html = (files / "r.html").read_text()
    assert "fp32 island" in html and "TRT-H001" in html


def test_fp8_insert_lints_clean_and_names_its_type(files, capsys):
    out = files / "q8.onnx"
    onnx.save(fp8_cnn("Flatten"), files / "cnn.onnx")  # FP8 Conv and Gemm, an INT8 stem
    np.save(files / "x12.npy", np.random.default_rng(0).normal(size=(32, 3, 12, 12)).astype(
        np.float32))
    assert main(["insert", str(files / "cnn.onnx"), "-o", str(out), "--calib",
                 str(files / "x12.npy"), "--dtype", "fp8", "--calib-method", "max"]) == 0
    capsys.readouterr()
    _, _, m = _types(out)
    zps = {t.data_type for t in m.graph.initializer if t.name.endswith("_zero_point")}
    assert zps == {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT8}
    assert main(["lint", str(out)]) == 0
    assert "3 of 3 weighted layers FP8/INT8, 0 fusions broken, 0 errors, 0 warnings" in \
        capsys.readouterr().out


def test_rules_lists_the_guards_and_the_fp8_scheme(capsys):
    assert main(["rules"]) == 0
    listed = capsys.readouterr().out
    assert "TRT-H001   fp16-activation-range" in listed and "fp8: FLOAT8E4M3FN" in listed
    assert main(["rules", "TRT-H002"]) == 0
    assert "smallest normal" in capsys.readouterr().out


@pytest.mark.training
def test_finetune_writes_the_fp16_remainder_by_default(files, capsys):
    q = files / "q.onnx"
    assert main(["insert", str(files / "fp32.onnx"), "-o", str(q), "--calib",
                 str(files / "x.npy")]) == 0
    np.savez(files / "train.npz", x=X, labels=np.arange(32) % 4)
    out = files / "ft.onnx"
    assert main(["finetune", str(q), "--data", str(files / "train.npz"), "-o", str(out),
                 "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    io, scales, m = _types(out)
    assert io == [F32, F32] and scales == {F16}
    onnx.checker.check_model(m, full_check=True)
    assert "float remainder typed fp16" in capsys.readouterr().err
