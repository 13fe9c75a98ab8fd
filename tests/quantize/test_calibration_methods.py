"""Calibration methods against independent references on distributions that stress them:
entropy against a plain, slow implementation of the published KL search (within one bin),
mse against the empirical optimum, plus batch-size/order invariance and the clipping guard.
"""

import warnings

import numpy as np
import pytest
from helpers import G

from qdq_onnx.errors import SettingError
from qdq_onnx.quantize.calibration import CalibrationConfig, ClippingWarning, calibrate_plan
from qdq_onnx.quantize.histogram import TensorStats
from qdq_onnx.quantize.methods import (
    ENTROPY_MAX_CLIP,
    amax_entropy,
    amax_mse,
    entropy_divergences,
    entropy_threshold,
)
from qdq_onnx.types.scheme import INT8

QUIET = CalibrationConfig(show_progress=False)

RNG = np.random.default_rng(7)


def reference_entropy(hist: np.ndarray, edges: np.ndarray, start: int = 128,
                      levels: int = 128) -> float:
    """The KL threshold search as NVIDIA's histogram calibrator describes it, one candidate
    at a time with plain loops (written from the description, not from the package)."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]
    total = bins.sum()
    best_i, best_kl = None, None
    for i in range(start, len(bins) + 1):
        space = np.linspace(0, i, num=levels + 1)
        chunk = np.digitize(np.arange(i), space) - 1
        chunk[bins[:i] == 0] = -1
        sums, members = np.zeros(levels), np.zeros(levels)
        for j in range(i):
            if chunk[j] >= 0:
                sums[chunk[j]] += bins[j]
                members[chunk[j]] += 1
        q = np.array([sums[c] / members[c] if c >= 0 else 0.0 for c in chunk])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        kl = 0.0
        for pj, qj in zip(p, q):
            if pj > 0:
                kl = np.inf if qj == 0 else kl + pj * np.log(pj / qj)
        if best_kl is None or kl <= best_kl:  # `<=`: the largest threshold on ties
            best_i, best_kl = i, kl
    assert round(total) == round(bins.sum())
    return float(edges[best_i])


def stats_of(values: np.ndarray, bins: int = 512, fixed: bool = True) -> TensorStats:
    s = TensorStats.with_range(float(np.abs(values).max()), bins) if fixed \
        else TensorStats(bins=bins)
    for chunk in np.array_split(values, 7):
        s.update(chunk)
    return s


def relu_like(n):  # a large spike at exactly zero plus a half-normal
    x = np.abs(RNG.normal(0, 1, n)).astype(np.float32)
    x[RNG.random(n) < 0.6] = 0.0
    return x


DISTRIBUTIONS = {
    "relu-spike": lambda: relu_like(200_000),
    "half-normal": lambda: np.abs(RNG.normal(0, 1, 200_000)).astype(np.float32),
    "laplace": lambda: RNG.laplace(0, 1, 200_000).astype(np.float32),
    "student-t3": lambda: RNG.standard_t(3, 200_000).astype(np.float32),
    "bimodal": lambda: np.concatenate([RNG.normal(-3, 0.3, 100_000),
                                       RNG.normal(2, 0.5, 100_000)]).astype(np.float32),
    "few-nonzero": lambda: np.concatenate([np.zeros(100_000),
                                           RNG.uniform(0.5, 4, 37)]).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_entropy_matches_the_reference_within_one_bin(name):
    s = stats_of(DISTRIBUTIONS[name]())
    ours, ref = amax_entropy(s, INT8, max_clip=None), reference_entropy(s.hist, s.edges)
    assert abs(ours - min(ref, s.amax)) <= s.width * 1.0001, (ours, ref, s.width)


def test_entropy_matches_the_reference_on_a_histogram_grown_by_doubling():
    values = np.concatenate([np.abs(RNG.normal(0, 0.1, 50_000)),
                             np.abs(RNG.normal(0, 1, 50_000)),
                             np.abs(RNG.normal(0, 6, 5_000))]).astype(np.float32)
    s = TensorStats(bins=512)
    for chunk in np.array_split(values, 3):  # ranges 0.4 -> 4 -> 25: two doublings at least
        s.update(chunk)
    assert not s.fixed and s.upper > 4 * 0.4
    ours, ref = amax_entropy(s, INT8, max_clip=None), reference_entropy(s.hist, s.edges)
    assert abs(ours - min(ref, s.amax)) <= s.width * 1.0001


def test_entropy_divergences_equal_the_reference_values_on_2048_bins():
    s = stats_of(RNG.laplace(0, 1, 100_000).astype(np.float32), bins=2048)
    hist = s.hist.astype(np.float64)
    hist[0] = hist[1]
    cand, kl = entropy_divergences(hist, INT8.levels, INT8.levels)
    for i in (128, 300, 1024, 2048):  # spot checks against the plain formula
        space = np.linspace(0, i, 129)
        chunk = np.digitize(np.arange(i), space) - 1
        nonzero = hist[:i] > 0
        q = np.zeros(i)
        for c in range(128):
            sel = (chunk == c) & nonzero
            if sel.any():
                q[sel] = hist[:i][chunk == c].sum() / sel.sum()
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        expected = np.sum(p[mask] * np.log(p[mask] / q[mask]))
        assert kl[i - 128] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["laplace", "half-normal", "student-t3"])
def test_mse_is_at_the_empirical_optimum(name):
    values = DISTRIBUTIONS[name]()
    s = stats_of(values, bins=2048)
    chosen = amax_mse(s, INT8)

    def mse(amax):
        scale = np.float32(amax / 127)
        narrow = np.clip(np.rint(values / scale), -127, 127) * scale
        return float(np.mean((values - narrow) ** 2))

    grid = np.linspace(s.amax * 0.05, s.amax, 400)
    best = min(mse(a) for a in grid)
    assert mse(chosen) <= best * 1.03, (chosen, mse(chosen), best)


def cnn():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 8))
    y = g.binary("Add", "add", a, g.conv("c1", a, 8))
    p = g.node("MaxPool", "pool", [y], kernel_shape=[2, 2])
    g.channels[p] = 8
    return g.model([g.conv("c2", p, 4)])


def plan_of(model):
    from qdq_onnx import pipeline
    from qdq_onnx.convert.prepare import prepare_model

    prepared, _ = prepare_model(model)
    return prepared, pipeline.plan_placement(prepared)


@pytest.mark.parametrize("method", ["max", "percentile", "entropy", "mse"])
def test_scales_do_not_depend_on_batch_size_or_order(method):
    model, plan = plan_of(cnn())
    x = RNG.normal(0, 1, (96, 3, 8, 8)).astype(np.float32)
    x[::5] *= 4  # a few large samples, so the order of range growth would matter
    results = []
    for batch, order in ((1, None), (7, None), (64, None), (7, RNG.permutation(96)),
                         (64, RNG.permutation(96))):
        data = x if order is None else x[order]
        config = CalibrationConfig(batch_size=batch, method=method, show_progress=False)
        results.append(calibrate_plan(model, plan, data, config).amax)
    for other in results[1:]:
        assert other == results[0]  # identical floats, not just close


def test_clipping_guard_warns_names_the_tensor_and_never_changes_scales():
    model, plan = plan_of(cnn())
    x = RNG.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calibrate_plan(model, plan, x, CalibrationConfig(
            method="percentile", percentile=90.0, show_progress=False))
    flagged = [c for c in result.clipping if c.clipped > 0.01]
    assert flagged and len(result.warnings) == len(flagged)
    assert any(issubclass(w.category, ClippingWarning) for w in caught)
    first = flagged[0]
    text = next(m for m in result.warnings if repr(first.tensor) in m)
    assert f"{first.clipped * 100:.2f}%" in text and "dB" in text
    assert first.suggestion in ("max", "mse", "entropy") and first.suggestion in text
    assert 0.05 < first.clipped < 0.2  # percentile 90 of |x| clips about 10%
    quiet = calibrate_plan(model, plan, x, CalibrationConfig(
        method="percentile", percentile=90.0, show_progress=False, clip_warning=1.0))
    assert quiet.amax == result.amax and quiet.warnings == []


def test_clipped_fraction_is_exact_at_bin_edges():
    values = np.abs(RNG.normal(0, 1, 10_000)).astype(np.float32)
    s = stats_of(values, bins=256)
    for k in (10, 100, 200):
        edge = float(s.edges[k])
        exact = np.mean(values > edge)
        assert s.clipped_fraction(edge) == pytest.approx(exact, abs=2 / len(values))


def spiky_relu(n=300_000):
    """A ReLU after a Conv on images with a blank background: exact zeros, a tall spike at
    the conv's response to flat patches, and a spread of real features."""
    x = np.abs(RNG.normal(0, 1.5, n)).astype(np.float32)
    u = RNG.random(n)
    x[u < 0.5] = 0.0
    x[(u >= 0.5) & (u < 0.8)] = 0.21
    return x


def test_entropy_keeps_to_rare_outliers_where_the_reference_clips_real_values():
    s = stats_of(spiky_relu(), bins=2048)
    used, reference = entropy_threshold(s, INT8)
    assert reference == amax_entropy(s, INT8, max_clip=None)
    assert s.clipped_fraction(reference) > 0.01  # the reference clips real values
    assert s.clipped_fraction(used) <= ENTROPY_MAX_CLIP
    assert s.estimated_sqnr_db(used, INT8) > s.estimated_sqnr_db(reference, INT8) + 3


def test_entropy_deviation_is_reported_not_silent():
    model, plan = plan_of(cnn())
    x = RNG.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    result = calibrate_plan(model, plan, x, CalibrationConfig(method="entropy",
                                                              show_progress=False))
    from qdq_onnx.quantize.calibration import collect_stats

    stats = collect_stats(model, set(result.amax), x, QUIET)
    changed = [t for t, s in stats.items() if len(set(entropy_threshold(s, INT8))) == 2]
    assert len(result.notes) == len(changed)
    for t in changed:
        assert any(repr(t) in note and "KL minimum" in note for note in result.notes)


def test_auto_picks_per_tensor_the_threshold_best_at_the_reading_layer():
    """auto's choice for each tensor beats (or ties) every single method's threshold at the
    output of the layer that reads it, re-measured here independently."""
    from qdq_onnx.graph.sessions import inference_session, with_outputs
    from qdq_onnx.quantize.calibration import collect_stats
    from qdq_onnx.quantize.methods import SINGLE_METHODS, amax_from_stats
    from qdq_onnx.quantize.scales import amax_to_scale, quantize_dequantize

    model, plan = plan_of(cnn())
    x = RNG.laplace(0, 1, (64, 3, 8, 8)).astype(np.float32)
    result = calibrate_plan(model, plan, x, CalibrationConfig(method="auto",
                                                              show_progress=False))
    assert set(result.choices) == set(result.amax)
    assert result.notes and "auto:" in result.notes[0]
    stats = collect_stats(model, set(result.amax), x, QUIET)
    session = inference_session(with_outputs(model, ["c1_out", "r0_out"]))
    import onnx

    c1 = next(n for n in model.graph.node if n.name == "c1")  # c1 reads r0_out
    sub = onnx.helper.make_graph([c1], "c1", [onnx.helper.make_tensor_value_info(
        "r0_out", onnx.TensorProto.FLOAT, None)], [onnx.helper.make_tensor_value_info(
        "c1_out", onnx.TensorProto.FLOAT, None)],
        [t for t in model.graph.initializer if t.name in c1.input])
    m = onnx.helper.make_model(sub, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    run = inference_session(m)
    pairs = [session.run(["c1_out", "r0_out"], {"x": x[i:i + 1]}) for i in range(len(x))]

    def noise(amax):
        scale = amax_to_scale(np.float32(amax), INT8)[0]
        fed = [(ref, {"r0_out": quantize_dequantize(r0, scale, INT8)[0]}) for ref, r0 in pairs]
        return sum(float(np.sum((run.run(None, feed)[0] - ref.astype(np.float64)) ** 2))
                   for ref, feed in fed)

    candidates = {m: noise(amax_from_stats(stats["r0_out"], m, INT8)) for m in SINGLE_METHODS}
    assert noise(result.amax["r0_out"]) <= min(candidates.values()) * (1 + 1e-9)
    assert result.choices["r0_out"] == min(candidates, key=candidates.get) or \
        candidates[result.choices["r0_out"]] == min(candidates.values())


def test_batches_shrink_to_the_memory_cap_and_the_ranges_do_not_move(caplog):
    """A model whose activations pass `batch_mib` per batch is calibrated in fewer samples
    per run, saying so; the histograms, so the ranges, are those of the full batches."""
    import logging

    from qdq_onnx import pipeline

    g = G(input_shape=("N", 4, 64, 64))
    model = g.model([g.unary("Relu", "r2", g.conv("c2", g.unary("Relu", "r1", g.conv(
        "c1", "x", 16)), 16))])
    x = np.random.default_rng(0).normal(size=(24, 4, 64, 64)).astype(np.float32)
    big = pipeline.insert(model, calibration=pipeline.CalibrationConfig(refine_scales="off"),
                          data=x, guard=pipeline.AccuracyGuardConfig(enabled=False))
    with caplog.at_level(logging.INFO, logger="qdq_onnx.calibration"):
        small = pipeline.insert(model, calibration=pipeline.CalibrationConfig(
            refine_scales="off", batch_mib=1), data=x,
            guard=pipeline.AccuracyGuardConfig(enabled=False))
    notes = [r.getMessage() for r in caplog.records if "batches of" in r.getMessage()]
    assert notes and "kept under 1 MiB (--calib-batch-mib)" in notes[0]
    assert int(notes[0].split("batches of ")[1].split()[0]) < 24
    assert small.calibration.amax == big.calibration.amax
    with pytest.raises(SettingError, match="batch_mib"):
        pipeline.CalibrationConfig(batch_mib=0)


def test_a_small_model_is_not_probed_and_a_large_one_is(monkeypatch):
    """The memory probe costs a session build: a model whose batch cannot come near
    `batch_mib` even at 64x its input per tensor skips it; one that can is measured."""
    import qdq_onnx.quantize.calib_batches as calib_batches
    import qdq_onnx.quantize.calibration as calibration
    from qdq_onnx import pipeline

    g = G(input_shape=("N", 4, 8, 8))
    model = g.model([g.conv("c2", g.unary("Relu", "r1", g.conv("c1", "x", 8)), 8)])
    x = np.random.default_rng(0).normal(size=(40, 4, 8, 8)).astype(np.float32)
    built: list[bool] = []
    real = calib_batches.session

    def counted(model, outputs, reduce_max=False):
        built.append(reduce_max)
        return real(model, outputs, reduce_max)

    monkeypatch.setattr(calibration, "session", counted)  # the passes'
    monkeypatch.setattr(calib_batches, "session", counted)  # the probe's
    settings = dict(refine_scales="off", method="mse")
    pipeline.insert(model, calibration=pipeline.CalibrationConfig(**settings), data=x,
                    guard=pipeline.AccuracyGuardConfig(enabled=False))
    assert built == [True, False]  # the ranges pass and the histogram pass, no probe
    built.clear()
    pipeline.insert(model, calibration=pipeline.CalibrationConfig(batch_mib=1, **settings),
                    data=x, guard=pipeline.AccuracyGuardConfig(enabled=False))
    # 1 KiB of input x 64 x 1 fetched tensor (c2's input) x 32 samples passes 1 MiB:
    # probed (a fetching session) before the histogram pass
    assert built == [False, True, False]
