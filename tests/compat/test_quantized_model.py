"""The original toolkit's entry points (`qdq_onnx.compat`): `quantize_model` and the
`QuantizedModel` it returns, as its users call them. Placement itself is tested at its
own stage (tests/placement); here, what this front end adds: nothing the caller passes is
modified, Keras-like errors, and the file it saves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qdq_onnx import calibrate, quantize_model
from qdq_onnx.errors import QdqError, SettingError
from qdq_onnx.graph.sessions import inference_session


def test_quantize_model_leaves_its_input_alone_and_predicts_with_the_qdq_graph(
        float_model, digits):
    before = float_model.SerializeToString()
    q = quantize_model(float_model, calibration_data=digits[0][:64])
    assert float_model.SerializeToString() == before
    assert {n.op_type for n in q.onnx.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    x = digits[2][:32]
    got = np.asarray(q.predict(x))
    session = inference_session(q.onnx)
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    c = q.plan.counts()
    assert q.summary().startswith(f"{c['activation_qdq_pairs']} activation Q/DQ pairs")


def test_training_calls_before_compile_and_unknown_settings_are_one_line_errors(float_model):
    q = quantize_model(float_model)
    with pytest.raises(QdqError, match="call compile"):
        q.evaluate(np.zeros((2, 64), np.float32), np.zeros(2, np.int64))
    with pytest.raises(SettingError, match="learning_rate"):
        q.compile(learnin_rate=1e-3)


def test_save_writes_the_fp16_remainder_by_default_and_fp32_when_asked(float_model, digits,
                                                                       tmp_path):
    q = quantize_model(float_model, calibration_data=digits[0][:64])
    default = onnx.load(str(q.save(tmp_path / "q.onnx")))
    fp32 = onnx.load(str(q.save(tmp_path / "q32.onnx", high_precision="fp32")))
    floats = {t.data_type for t in default.graph.initializer} & {
        onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    assert onnx.TensorProto.FLOAT16 in floats
    assert onnx.TensorProto.FLOAT16 not in {t.data_type for t in fp32.graph.initializer}
    assert q.onnx.graph.initializer[0].data_type != onnx.TensorProto.FLOAT16  # working form


def test_calibrate_gives_a_new_model_and_keeps_the_quantized_models_scales(float_model,
                                                                           digits):
    q = quantize_model(float_model)
    before = q.onnx.SerializeToString()
    out = calibrate(q, digits[0][:64], show_progress=False)
    assert q.onnx.SerializeToString() == before
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    placeholders = {t.name: onnx.numpy_helper.to_array(t) for t in q.onnx.graph.initializer}
    assert any(not np.array_equal(scales[k], placeholders[k]) for k in placeholders
               if k in scales and scales[k].size == 1)


def test_the_older_weight_bits_still_works_with_a_deprecation_warning(float_model):
    with pytest.warns(DeprecationWarning, match="weight_scheme='int8-Nbit'"):
        q = quantize_model(float_model, weight_bits=4)
    assert {p.scheme for p in q.plan.placements if p.kind == "weight"} == {"int8-4bit"}
    with pytest.raises(QdqError, match="not both"):
        quantize_model(float_model, weight_bits=4, weight_scheme="int8-4bit")


def test_a_model_of_another_kind_is_refused_by_name():
    with pytest.raises(QdqError, match="not list"):
        quantize_model([1, 2, 3])
