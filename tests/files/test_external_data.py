"""Models with external data: kept external, written next to the output; over 2 GB too."""

import helpers
import numpy as np
import onnx
import pytest
from helpers import G, run

from qdq_onnx.cli.main import main
from qdq_onnx.files.onnx_files import load_model, save_model_atomic


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
    calib = helpers.RNG.normal(size=(4, 3, 8, 8)).astype(np.float32)
    np.savez(data, x=calib)
    assert main(["insert", str(src_dir / "m.onnx"), "-o", str(out), "--calib", str(data)]) == 0
    assert (tmp_path / "q.onnx.data").is_file()
    q = load_model(out)
    onnx.checker.check_model(str(out), full_check=True)
    x = calib[:1]  # inside the calibrated range
    a, b = run(m, x)[0], run(q, x)[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


_BUILD_BIG = """
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper
from qdq_onnx.files.onnx_files import save_model_atomic

k = n = 23_200  # one 2.15 GB MatMul weight
model = onnx.ModelProto(ir_version=8)
model.opset_import.add(domain="", version=13)
g = model.graph
g.name = "big"
g.node.append(helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"))
g.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k]))
g.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n]))
w = np.ones((k, n), np.float32)
w[:, 0] = 2.0
t = g.initializer.add()  # set in place: copying a >2 GB tensor proto fails
t.name, t.data_type = "w", TensorProto.FLOAT
t.dims.extend([k, n])
t.raw_data = w.tobytes()
del w
save_model_atomic(model, sys.argv[1])  # over 2 GB: external data chosen automatically
"""


@pytest.mark.slow
def test_model_over_2gb(tmp_path):
    """A model over protobuf's 2 GB limit, through insert: with the FP32 remainder the
    output is over 2 GB too (written with external data); with the default FP16 remainder
    its weights halve and stay external, like the input's."""
    import subprocess
    import sys

    from qdq_onnx.precision.qdq_values import reduced_scale
    from qdq_onnx.types.float_type import FP16

    # Subprocesses keep the multi-GB objects out of the test process (and its reports).
    src = tmp_path / "big.onnx"
    subprocess.run([sys.executable, "-c", _BUILD_BIG, str(src)], check=True)
    assert (tmp_path / "big.onnx.data").stat().st_size > 2**31
    for name, flags, size, dtype in (("big_q32.onnx", ["--high-precision", "fp32"], 2**31,
                                      np.float32),
                                     ("big_q16.onnx", [], 2**30, np.float16)):
        out = tmp_path / name
        res = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", "insert", str(src),
                              "-o", str(out), *flags], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / f"{name}.data").stat().st_size > size
        assert out.stat().st_size < 10 * 2**20
        onnx.checker.check_model(str(out))
        q = onnx.load(str(out), load_external_data=False)
        ops = [nd.op_type for nd in q.graph.node]
        assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 2
        scale = next(t for t in q.graph.initializer if t.name.endswith("w_scale"))
        values = onnx.numpy_helper.to_array(scale, base_dir=str(tmp_path))
        want = np.float32(2.0) / 127
        if dtype is np.float16:
            want = reduced_scale(np.float32(want), FP16, None)  # the nearest FP16 value
        assert values.dtype == dtype and values.shape == (23_200,) and values[0] == want
        (tmp_path / f"{name}.data").unlink()  # the disk holds one output at a time
