"""Models with external data: kept external, written next to the output; over 2 GB too."""

import numpy as np
import onnx
import pytest
from helpers import RNG, G, run
from onnx import TensorProto, helper

from qdq_onnx.cli.main import main
from qdq_onnx.model_io import load_model, save_model_atomic


def _model():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 16))
    return g.model([g.binary("Add", "add", a, g.conv("c1", a, 16))])


def test_forced_external_roundtrip(tmp_path):
    m = _model()
    out = save_model_atomic(m, tmp_path / "m.onnx", check="the model", external=True)
    assert (tmp_path / "m.onnx.data").stat().st_size > 0
    assert (tmp_path / "m.onnx").stat().st_size < (tmp_path / "m.onnx.data").stat().st_size
    back = load_model(out)
    for a, b in zip(back.graph.initializer, m.graph.initializer):
        assert a.name == b.name
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a),
                                      onnx.numpy_helper.to_array(b))
    assert [n.name for n in back.graph.node] == [n.name for n in m.graph.node]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_external_input_gives_external_output(tmp_path):
    m = _model()
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(m)  # saving with external data rewrites the proto it is given
    onnx.save(on_disk, src_dir / "m.onnx", save_as_external_data=True,
              location="weights.bin", size_threshold=64)
    out = tmp_path / "q.onnx"
    data = tmp_path / "calib.npz"
    calib = RNG.normal(size=(4, 3, 8, 8)).astype(np.float32)
    np.savez(data, x=calib)
    assert main(["insert", str(src_dir / "m.onnx"), "-o", str(out), "--calib", str(data)]) == 0
    assert (tmp_path / "q.onnx.data").is_file()
    q = load_model(out)
    onnx.checker.check_model(str(out), full_check=True)
    x = calib[:1]  # inside the calibrated range
    a, b = run(m, x)[0], run(q, x)[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


@pytest.mark.slow
def test_model_over_2gb(tmp_path):
    k = n = 23_200  # one 2.15 GB MatMul weight
    w = np.ones((k, n), np.float32)
    w[:, 0] = 2.0
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])
    init = onnx.numpy_helper.from_array(w, "w")
    del w
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "big",
                              [x], [y], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    src = tmp_path / "big.onnx"
    save_model_atomic(model, src)  # over 2 GB: external data chosen automatically
    del model, graph, init
    assert (tmp_path / "big.onnx.data").stat().st_size > 2**31
    out = tmp_path / "big_q.onnx"
    assert main(["insert", str(src), "-o", str(out)]) == 0
    assert (tmp_path / "big_q.onnx.data").stat().st_size > 2**31
    assert (tmp_path / "big_q.onnx").stat().st_size < 10 * 2**20
    onnx.checker.check_model(str(out))
    q = onnx.load(str(out), load_external_data=False)
    ops = [nd.op_type for nd in q.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 2
