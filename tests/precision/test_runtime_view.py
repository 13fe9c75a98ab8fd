"""Sessions compute the ONNX-defined rounding of FP16 QuantizeLinear, whatever the
installed onnxruntime does (1.19.2 truncates toward zero: microsoft/onnxruntime#18576)."""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.graph.runtime_view import exact_rounding_view, runtime_truncates
from qdq_onnx.graph.sessions import inference_session


def _pair(values_shape, scale, axis=None):
    attrs = {"axis": axis} if axis is not None else {}
    s = np.asarray(scale, np.float16)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q", **attrs),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", **attrs)],
        "pair", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, values_shape)],
        [helper.make_tensor_value_info("q", onnx.TensorProto.INT8, values_shape),
         helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, values_shape)],
        [numpy_helper.from_array(s, "s"), numpy_helper.from_array(np.zeros(s.shape, np.int8),
                                                                   "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m


def test_fp16_quantize_rounds_to_nearest_even_per_tensor_and_per_channel():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(8, 64)) * 3).astype(np.float16)
    for scale, axis in ((np.float16(0.037), None), (rng.uniform(0.01, 0.05, 8), 0)):
        model = _pair([8, 64], scale, axis)
        s = np.asarray(scale, np.float16).astype(np.float32)
        s = s.reshape(-1, 1) if axis == 0 else s
        want = np.clip(np.rint(x.astype(np.float32) / s), -128, 127)
        q, y = inference_session(model, optimize=False).run(None, {"x": x})
        np.testing.assert_array_equal(q, want.astype(np.int8))
        np.testing.assert_array_equal(y, (want * s).astype(np.float16))
        assert y.dtype == np.float16


def test_the_view_changes_nothing_where_the_runtime_rounds_and_never_the_file():
    model = _pair([4], np.float16(0.5))
    before = model.SerializeToString()
    view = exact_rounding_view(model)
    assert model.SerializeToString() == before
    if runtime_truncates():  # onnxruntime 1.19.2
        assert [n.op_type for n in view.graph.node] == \
            ["Cast", "QuantizeLinear", "DequantizeLinear", "Cast"]
    else:  # a runtime with the fix (1.32): the file runs as it is
        assert view is model
