"""Calibration methods, streaming histogram state, and recalibration of Q/DQ models."""

import helpers
import numpy as np
import onnx
import pytest
from helpers import G
from onnx import numpy_helper

from qdq_onnx import calibrate, quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.errors import QdqError
from qdq_onnx.graph.qdq import qdq_pairs
from qdq_onnx.quantize.calibration import METHODS, TensorStats, amax_from_stats
from qdq_onnx.quantize.methods import SINGLE_METHODS
from qdq_onnx.types.scheme import INT8


def _model():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 8))
    y = g.binary("Add", "add", a, g.conv("c1", a, 8))
    return g.model([g.node("GlobalAveragePool", "gap", [y])])


def _data(n=16):
    return helpers.RNG.normal(0, 1, (n, 3, 8, 8)).astype(np.float32)


def _scales(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {p.source: inits[p.scale] for p in qdq_pairs(model) if not p.is_weight}


def _sqnr(x, amax):
    step = np.float32(amax / 127)
    xq = np.clip(np.rint(x / step), -127, 127) * step  # symmetric, narrow range
    return 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - xq) ** 2))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_finite_positive_scales(method):
    q = quantize_model(_model(), calibration_data=_data(), calibration_method=method)
    scales = _scales(q.onnx)
    assert scales and all(np.isfinite(s).all() and (s > 0).all() for s in scales.values())


def _stats(x, chunks=13):
    stats = TensorStats()
    for chunk in np.array_split(x, chunks):
        stats.update(chunk)
    return stats


def test_heavy_tailed_activation_percentile_and_mse_gain_more_than_they_clip():
    x = np.random.default_rng(11).laplace(0, 1, 400_000).astype(np.float32)
    stats = _stats(x)
    amax_max = amax_from_stats(stats, "max", INT8)
    assert amax_max == np.abs(x).max()
    base = _sqnr(x, amax_max)
    for method in ("percentile", "mse", "entropy"):
        amax = amax_from_stats(stats, method, INT8, percentile=99.99)
        assert 0 < amax < amax_max
        if method != "entropy":  # entropy minimises KL divergence, not the squared error
            assert _sqnr(x, amax) - base > 1.0, method


def test_mse_gives_the_best_sqnr_on_a_student_t_activation():
    x = np.random.default_rng(12).standard_t(4, 400_000).astype(np.float32)
    stats = _stats(x)
    sqnr = {m: _sqnr(x, amax_from_stats(stats, m, INT8)) for m in SINGLE_METHODS}
    assert sqnr["mse"] == max(sqnr.values())
    assert sqnr["mse"] > sqnr["max"] + 1.0


def test_histogram_state_is_bounded_and_loses_no_counts():
    small, large = TensorStats(), TensorStats()
    small.update(helpers.RNG.normal(size=1000))
    for i in range(200):  # growing range forces pairwise bin merges
        large.update(helpers.RNG.normal(0, 1 + i / 10, size=5000))
    assert small.nbytes() == large.nbytes() == 2048 * 8
    assert int(large.hist.sum()) == large.count == 200 * 5000


def test_streamed_histogram_percentile_matches_exact():
    x = helpers.RNG.standard_t(3, 300_000).astype(np.float32)
    stats = TensorStats()
    for chunk in np.array_split(x, 30):
        stats.update(chunk)
    exact = np.percentile(np.abs(x), 99.9)
    got = amax_from_stats(stats, "percentile", INT8, percentile=99.9)
    assert abs(got - exact) <= 2 * stats.upper / stats.bins


def test_recalibrating_a_qdq_model_equals_calibrating_at_insert():
    data, model = _data(), _model()
    direct = quantize_model(model, calibration_data=data, calibration_method="percentile")
    placeholder = quantize_model(model)
    recal = calibrate(placeholder.onnx, data, method="percentile", show_progress=False)
    a, b = _scales(direct.onnx), _scales(recal)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    meta = {p.key: p.value for p in recal.metadata_props}
    assert meta["qdq_onnx.activation_scales"] == "calibrated:percentile"
    assert _scales(placeholder.onnx) != b  # the input model is left as it was


def test_calibrate_cli_and_errors(tmp_path, capsys):
    src = tmp_path / "q.onnx"
    onnx.save(quantize_model(_model()).onnx, src)
    data = tmp_path / "d.npz"
    np.savez(data, x=_data())
    out = tmp_path / "cal.onnx"
    assert main(["calibrate", str(src), "--data", str(data), "-o", str(out), "--method",
                 "entropy"]) == 0
    onnx.checker.check_model(str(out), full_check=True)
    assert main(["calibrate", str(src), "--data", str(data), "-o", str(out),
                 "--percentile", "0"]) == 2
    assert "--percentile" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=_data())
    assert main(["calibrate", str(src), "--data", str(bad), "-o", str(tmp_path / "z.onnx")]
                ) == 2
    assert "no array for model input" in capsys.readouterr().err
    assert not (tmp_path / "z.onnx").exists()


def test_calibrating_a_float_model_is_refused():
    with pytest.raises(QdqError, match="no activation Q/DQ pairs"):
        calibrate(_model(), _data())


def test_entropy_is_not_dragged_to_zero_by_relu_zeros():
    x = np.maximum(helpers.RNG.normal(0, 1, 200_000), 0).astype(np.float32)  # half exact zeros
    stats = _stats(x)
    amax = amax_from_stats(stats, "entropy", INT8)
    assert 0.5 * stats.amax < amax <= stats.amax
