"""FP8 E4M3: placement in the fp8 scheme, amax/448 scales, calibration methods that fit a
float grid, an FP16 remainder around it, lint, and fine-tuning whose fake quantization is
bit-exact against QuantizeLinear/DequantizeLinear(float8e4m3fn)."""

import numpy as np
import onnx
import pytest
from helpers import fp8_everywhere_rules, small_classifier
from onnx import helper, numpy_helper

from qdq_onnx import pipeline, quantize_model
from qdq_onnx.errors import QdqError
from qdq_onnx.graph.sessions import inference_session
from qdq_onnx.quantize.scales import fp8_round

X = np.random.default_rng(0).normal(size=(32, 3, 8, 8)).astype(np.float32)
FP8 = onnx.TensorProto.FLOAT8E4M3FN


def _sqnr(want, got):
    return 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2))


def test_fp8_pairs_have_fp8_zero_points_and_amax_over_448_scales():
    m = small_classifier()  # 4-channel convs: FP8 only without the rules' INT8 fallbacks
    q = pipeline.insert(m, pipeline.PlacementConfig(scheme="fp8", rules=fp8_everywhere_rules()),
                        data=X)
    onnx.checker.check_model(q.qdq, full_check=True)
    assert q.qdq.opset_import[0].version >= 19
    assert {p.scheme for p in q.plan.placements} == {"fp8"}
    inits = {t.name: t for t in q.qdq.graph.initializer}
    zps = [inits[n.input[2]] for n in q.qdq.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.data_type == FP8 for z in zps)
    assert np.isclose(numpy_helper.to_array(inits["x_scale"]), np.abs(X).max() / 448)
    want = inference_session(m).run(None, {"x": X})[0]
    got = inference_session(q.qdq).run(None, {"x": X})[0]
    assert _sqnr(want, got) > 25  # E4M3 keeps 3 mantissa bits: ~30 dB on this CNN
    report = pipeline.lint(pipeline.type_remainder(q.qdq, data=X).model)
    assert report.findings == [] and {la.scheme for la in report.layers} == {"fp8"}


def test_fp8_with_the_fp16_remainder_matches_the_fp32_remainder():
    q = pipeline.insert(small_classifier(), pipeline.PlacementConfig(scheme="fp8"), data=X)
    typed = pipeline.type_remainder(q.qdq, data=X).model
    onnx.checker.check_model(typed, full_check=True)
    a = inference_session(q.qdq).run(None, {"x": X})[0]
    b = inference_session(typed).run(None, {"x": X})[0]
    assert _sqnr(a, b) > 25


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_integer_grid_methods_are_refused_for_fp8_in_one_line(method):
    with pytest.raises(QdqError, match=f"method '{method}' searches a clipping range on an "
                                       "integer grid; fp8 takes max or percentile"):
        pipeline.insert(small_classifier(), pipeline.PlacementConfig(scheme="fp8"),
                        pipeline.CalibrationConfig(method=method), data=X)


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_the_combination_is_refused_before_any_data_is_read(method):
    """Calibration methods are registered objects; each scheme's method is checked before
    the statistics pass reads a batch."""
    def batches():
        raise AssertionError("data was read")
        yield  # pragma: no cover

    with pytest.raises(QdqError, match=f"method '{method}' searches a clipping range"):
        pipeline.insert(small_classifier(), pipeline.PlacementConfig(scheme="fp8"),
                        pipeline.CalibrationConfig(method=method), data=batches())


def test_the_registered_methods_are_the_settings_methods():
    from qdq_onnx.quantize.config import METHODS
    from qdq_onnx.quantize.methods import CALIBRATION_METHODS, FLOAT_METHODS

    assert tuple(CALIBRATION_METHODS) == METHODS
    assert {m.name for m in CALIBRATION_METHODS.values()
            if m.float_grid and m.threshold is not None} == set(FLOAT_METHODS)


def test_numpy_fp8_rounding_is_the_onnx_definition():
    values = np.concatenate([np.random.default_rng(1).normal(0, 60, 20000),
                             np.random.default_rng(2).normal(0, 0.01, 20000),
                             [0.0, 448.0, 460.0, 464.0, 470.0, -500.0, 2.0 ** -9, 2.0 ** -10,
                              3 * 2.0 ** -10]]).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "fp8",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [values.size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [values.size])],
        [numpy_helper.from_array(np.float32(1.0), "s"),
         helper.make_tensor("z", FP8, [], [0.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    got = inference_session(m).run(None, {"x": values})[0]
    np.testing.assert_array_equal(fp8_round(values), got)


@pytest.mark.training
def test_fp8_fine_tuning_is_bit_exact_against_the_fp8_qdq_model(digits, float_model):
    xtr, ytr, xte, yte = digits
    q = quantize_model(float_model, calibration_data=xtr[:256], dtype="fp8")
    q.compile(learning_rate=1e-3)
    history = q.fit(xtr, ytr, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    emitted = q.export_fp32()  # refused unless the Q/DQ file computes the training graph
    assert q._training._trainer.check_emitted(emitted, xte) == 0.0
    zps = [t for t in emitted.graph.initializer if t.name.endswith("_zero_point")]
    assert zps and all(t.data_type == FP8 for t in zps)
    shipped = q.export()
    assert pipeline.lint(shipped).findings == []
    acc = np.mean(np.argmax(inference_session(shipped).run(None, {"x": xte})[0], 1) == yte)
    assert acc > 0.85

