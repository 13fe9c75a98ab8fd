"""What other exporters write, in small hand-built graphs (issue 26): paddle2onnx's -1 and '?'
sizes and empty Constant inputs, a -inf constant, symbolic height and width that training
takes from the data, and a graph that hard-codes its batch size. Each failed on the code
before issue 26."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.cli.main import main

RNG = np.random.default_rng(4)


def _w(name, shape):
    return numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float32), name)


def _save(path, nodes, inits, x_dims, y_dims=None, opset=13, constants=()):
    g = helper.make_graph([*constants, *nodes], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_dims)],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def _paddle_like(path):
    """Conv -> HardSigmoid -> Resize (an empty Constant roi) -> Conv, with paddle2onnx's
    input sizes [-1, 3, '?', '?'] (the shared '?' means 'unknown', not 'equal')."""
    empty = helper.make_node("Constant", [], ["roi"], name="roi_const",
                             value=numpy_helper.from_array(np.zeros(0, np.float32)))
    scales = helper.make_node("Constant", [], ["scales"], name="scales_const",
                              value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32)))
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("HardSigmoid", ["c0"], ["h"], name="hsig", alpha=0.2),
             helper.make_node("Resize", ["h", "roi", "scales"], ["r"], name="up",
                              mode="nearest"),
             helper.make_node("Conv", ["r", "w1"], ["y"], name="conv1")]
    return _save(path, nodes, [_w("w0", (4, 3, 3, 3)), _w("w1", (2, 4, 1, 1))],
                 [-1, 3, "?", "?"], [-1, 2, "?", "?"], constants=[empty, scales])


def _files(tmp_path, shape=(6, 3, 8, 12)):
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.uniform(-1, 1, shape).astype(np.float32))
    return data


def test_the_range_guard_skips_an_empty_constant_and_resize_scales_stay_fp32(tmp_path, capsys):
    """The guard's statistics pass reduced an empty Constant (Resize's roi): onnxruntime
    refused the session with an empty message. The FP16 typing cast Resize's scales (fixed
    FP32 by its definition) to FP16 and back, and lint called the Resize FP32."""
    src, data = _paddle_like(tmp_path / "m.onnx"), _files(tmp_path)
    assert main(["insert", str(src), "--calib", str(data), "-o", str(tmp_path / "q.onnx")]) == 0
    capsys.readouterr()
    q = onnx.load(tmp_path / "q.onnx")
    resize = next(n for n in q.graph.node if n.op_type == "Resize")
    producers = {o: n for n in q.graph.node for o in n.output}
    assert producers[resize.input[2]].op_type == "Constant"  # no Cast of the scales
    assert main(["lint", str(tmp_path / "q.onnx")]) == 0
    assert " 0 errors, 0 warnings" in capsys.readouterr().out


@pytest.mark.training
def test_a_paddle_like_graph_trains_at_the_data_size(tmp_path, capsys):
    """-1 batch, shared '?' sizes, HardSigmoid and Resize: trained at the data's 8x12."""
    src, data = _paddle_like(tmp_path / "m.onnx"), _files(tmp_path)
    q, out = tmp_path / "q.onnx", tmp_path / "out.onnx"
    assert main(["insert", str(src), "--calib", str(data), "-o", str(q)]) == 0
    assert main(["finetune", str(q), "--data", str(data), "--distill", "--batch-size", "4",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    emitted = onnx.load(out)
    dims = [d.dim_param or d.dim_value for d in
            emitted.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2] and dims[3] and not isinstance(dims[2], int)  # still symbolic
    assert {"HardSigmoid", "Resize"} <= {n.op_type for n in emitted.graph.node}


@pytest.mark.training
def test_validation_data_of_another_size_is_refused_in_one_line(tmp_path, capsys):
    src = _paddle_like(tmp_path / "m.onnx")
    data, val = _files(tmp_path), tmp_path / "v.npz"
    np.savez(val, x=RNG.uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32))
    q = tmp_path / "q.onnx"
    assert main(["insert", str(src), "--calib", str(data), "-o", str(q)]) == 0
    capsys.readouterr()
    code = main(["finetune", str(q), "--data", str(data), "--val", str(val), "--distill",
                 "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "samples of size [3, 16, 16], but the training graph was built for [3, 8, 12]" in err


def test_an_infinite_constant_outside_the_weights_is_not_a_corrupt_weight(tmp_path, capsys):
    """magika starts a Max at -inf: a meant infinity, not a diverged weight (NaN still is)."""
    inits = [_w("w", (4, 3)), numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="dense"),
             helper.make_node("Max", ["m", "ninf"], ["y"], name="max")]
    src = _save(tmp_path / "m.onnx", nodes, inits, ["n", 4], ["n", 3])
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(8, 4)).astype(np.float32))
    assert main(["insert", str(src), "--calib", str(data), "-o", str(tmp_path / "q.onnx")]) == 0
    inits[0] = numpy_helper.from_array(np.full((4, 3), np.inf, np.float32), "w")
    src = _save(tmp_path / "bad.onnx", nodes, inits, ["n", 4], ["n", 3])
    capsys.readouterr()
    assert main(["insert", str(src), "--calib", str(data), "-o", str(tmp_path / "q2.onnx")]) == 2
    assert "weight 'w' holds NaN/Inf" in capsys.readouterr().err


@pytest.mark.training
def test_a_graph_that_hard_codes_batch_one_trains_at_batch_one(tmp_path, capsys):
    """A fixed-batch export whose Reshape writes the batch (YOLOX's [1, -1, 6]): relaxed, two
    samples come out as one; the teacher and the emit check run it one sample at a time."""
    shape = numpy_helper.from_array(np.array([1, -1, 4], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("Reshape", ["c", "shape"], ["y"], name="flatten")]
    src = _save(tmp_path / "m.onnx", nodes, [_w("w", (4, 3, 3, 3)), shape], [1, 3, 4, 4],
                [1, 16, 4])
    data = _files(tmp_path, (4, 3, 4, 4))
    q = tmp_path / "q.onnx"
    assert main(["insert", str(src), "--calib", str(data), "-o", str(q)]) == 0
    capsys.readouterr()
    code = main(["finetune", str(q), "--data", str(data), "--distill", "-o",
                 str(tmp_path / "out.onnx")])
    assert code == 2
    assert "hard-codes its batch size 1" in capsys.readouterr().err
    assert main(["finetune", str(q), "--data", str(data), "--distill", "--batch-size", "1",
                 "-o", str(tmp_path / "out.onnx")]) == 0, capsys.readouterr().err


@pytest.mark.training
@pytest.mark.parametrize("op,gates", [("LSTM", 4), ("GRU", 3)])
def test_a_recurrent_op_without_initial_states_is_refused_or_trained_by_torch(op, gates,
                                                                           tmp_path, capsys):
    """torch.onnx and others may omit initial_h/initial_c; onnxruntime-training's
    LSTMGrad/GRUGrad then refuse to build (the coverage table's LSTM and LSTM(initial
    states) rows). Given zero states the step crashed the process in a trained model, so
    the op is named in one line instead. A Dense before it puts it on a gradient path."""
    hidden, axes = 5, numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["d"], name="dense"),
             helper.make_node("Transpose", ["d"], ["seq"], name="time_major", perm=[1, 0, 2]),
             helper.make_node(op, ["seq", "W", "R"], ["all", "last"], name="rnn",
                              hidden_size=hidden),
             helper.make_node("Squeeze", ["last", "axes"], ["y"], name="squeeze")]
    inits = [_w("w", (4, 4)), _w("W", (1, gates * hidden, 4)),
             _w("R", (1, gates * hidden, hidden)), axes]
    src = _save(tmp_path / "m.onnx", nodes, inits, ["n", 6, 4], ["n", hidden], opset=14)
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(8, 6, 4)).astype(np.float32))
    q, out = tmp_path / "q.onnx", tmp_path / "out.onnx"
    assert main(["insert", str(src), "--calib", str(data), "-o", str(q)]) == 0
    capsys.readouterr()
    argv = ["finetune", str(q), "--data", str(data), "--distill", "--batch-size", "4",
            "-o", str(out)]
    assert main([*argv, "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"operator ({op}Grad)" in err, err
    assert "onnxruntime_src" not in err and "::" not in err and not out.exists()
    # the default `auto` trains it with torch where PyTorch is installed, and says why
    pytest.importorskip("torch")
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "trained by torch" in said and f"operator ({op}Grad)" in said, said


@pytest.mark.training
@pytest.mark.parametrize("x_dims,w_shape", [(["n", 3, 8, 8], (4, 3, 3, 3)),
                                            (["n", 3, 16], (4, 3, 3))],
                         ids=["conv2d", "conv1d"])
def test_a_batch_norm_left_in_the_graph_trains_and_emits(x_dims, w_shape, tmp_path, capsys):
    """A BatchNormalization insert did not fold (another tool's Q/DQ file, or fine-tuning
    the float model as the equal-effort control) is frozen as Mul + Add for training. The
    emit check compared the file's BatchNormalization with that Mul + Add (2.4e-05 apart on
    the OCR recogniser, over the 1e-06 bound), and a rank-3 input broadcast [C, 1, 1] over
    the batch axis."""
    c = w_shape[0]
    stats = [numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), "scale"),
             numpy_helper.from_array(RNG.normal(0, 0.1, c).astype(np.float32), "shift"),
             numpy_helper.from_array(RNG.normal(0, 0.1, c).astype(np.float32), "mean"),
             numpy_helper.from_array(RNG.uniform(0.5, 2.0, c).astype(np.float32), "var")]
    pads = [1] * (2 * (len(w_shape) - 2))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=pads),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"],
                              ["y"], name="bn")]
    src = _save(tmp_path / "m.onnx", nodes, [_w("w", w_shape), *stats], x_dims,
                [x_dims[0], c, *x_dims[2:]])
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(8, *x_dims[1:])).astype(np.float32))
    out = tmp_path / "out.onnx"
    assert main(["finetune", str(src), "--data", str(data), "--distill", "--batch-size", "4",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    assert "BatchNormalization" in {n.op_type for n in onnx.load(out).graph.node}
