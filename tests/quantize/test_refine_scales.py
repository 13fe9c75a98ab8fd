"""Scale refinement (TRT-G002): after calibration, each INT8 activation range is tuned on the
quantized model's outputs against the float model's; it lowers the divergence without
losing a top class, evaluates exactly the model insertion writes, keeps to its budget, and
is recorded where the plan's other decisions are."""

from __future__ import annotations

import dataclasses

import helpers
import numpy as np
import onnx
import pytest
from helpers import G

from qdq_onnx import PlacementPlan, pipeline
from qdq_onnx.errors import QdqError, SettingError
from qdq_onnx.graph.sessions import inference_session
from qdq_onnx.placement.rules import default_rules
from qdq_onnx.quantize import refine_scales as rs
from qdq_onnx.quantize.calibration import calibration_feeds
from qdq_onnx.quantize.insert import insert_qdq


def _classifier(seed: int = 3, softmax: bool = False) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Relu -> pooling -> Gemm(12) (-> Softmax)."""
    saved, helpers.RNG = helpers.RNG, np.random.default_rng(seed)
    try:
        g = G(input_shape=("N", 3, 8, 8))
        h = g.unary("Relu", "r1", g.conv("c1", "x", 16))
        h = g.unary("Relu", "r2", g.conv("c2", h, 16))
        pooled = g.node("Flatten", "flat", [g.node("GlobalAveragePool", "gap", [h])])
        head = g.node("Gemm", "head", [pooled, g.w("head_w", helpers.RNG.normal(0, 1, (12, 16))),
                                       g.w("head_b", np.zeros(12))], transB=1)
        return g.model([g.node("Softmax", "prob", [head], axis=-1) if softmax else head])
    finally:
        helpers.RNG = saved


@pytest.fixture(scope="module")
def data():
    # heavy-tailed inputs: the method's ranges are far from what the outputs want
    return np.random.default_rng(5).standard_t(2, (128, 3, 8, 8)).astype(np.float32)


def _calibrated(model, data, **calibration):
    c = pipeline.CalibrationConfig(show_progress=False, refine_scales="off", **calibration)
    return pipeline.insert(model, calibration=c, data=data,
                           guard=pipeline.AccuracyGuardConfig(enabled=False))


def _divergence(model, feeds, qdq):
    kinds = rs._output_kinds(model)
    names = list(kinds)
    ref = [inference_session(model).run(names, f) for f in feeds]
    got = [inference_session(qdq).run(names, f) for f in feeds]
    return rs._Divergence(kinds, ref)(got)


def test_refinement_lowers_the_divergence_and_evaluates_what_insertion_writes(data):
    q = _calibrated(_classifier(), data)
    model, feeds = calibration_feeds(q.float_model, data, pipeline.CalibrationConfig(), 128)
    policy = default_rules().scale_refinement
    result = rs.refine_amax(model, q.plan, q.calibration.amax, feeds, policy, False)
    assert result.keys == len(q.plan.activation_groups()) and result.evaluations > 0
    assert result.factors and result.after < result.before * 0.95
    assert set(result.factors) <= set(q.calibration.amax)
    # each factor is one of the rule's, or two of them compounded by the second sweep
    products = {round(a * b, 9) for a in (1.0, *policy.factors) for b in (1.0, *policy.factors)}
    for key, factor in result.factors.items():
        assert result.amax[key] == pytest.approx(q.calibration.amax[key] * factor)
        assert round(factor, 9) in products
    # the scale-input model it scored equals the file insertion makes from the same ranges
    before, _ = _divergence(model, feeds, insert_qdq(model, q.plan, q.calibration.amax)[0])
    after, _ = _divergence(model, feeds, insert_qdq(model, q.plan, result.amax)[0])
    assert before == pytest.approx(result.before, rel=1e-6)
    assert after == pytest.approx(result.after, rel=1e-6)


def test_no_sample_loses_its_top_class(data):
    model = _classifier(softmax=True)
    q = _calibrated(model, data)
    m, feeds = calibration_feeds(q.float_model, data, pipeline.CalibrationConfig(), 128)
    result = rs.refine_amax(m, q.plan, q.calibration.amax, feeds,
                            default_rules().scale_refinement, False)
    _, before = _divergence(m, feeds, insert_qdq(m, q.plan, q.calibration.amax)[0])
    _, after = _divergence(m, feeds, insert_qdq(m, q.plan, result.amax)[0])
    assert after >= before
    assert rs._output_kinds(m) == {"prob_out": ("probs", -1)}  # read as probabilities


def test_insert_refines_by_default_and_records_it(data):
    model = _classifier()
    q = pipeline.insert(model, calibration=pipeline.CalibrationConfig(show_progress=False),
                        data=data)
    record = q.plan.scale_refinement
    assert record["rule"] == "TRT-G002" and record["method"] == "mse"
    assert record["samples"] == 128 and record["factors"]
    assert record["divergence"]["after"] < record["divergence"]["before"]
    assert any(line.startswith("scale refinement: divergence") for line in q.calibration.notes)
    # the file carries the refined ranges and the plan that says so
    meta = {p.key: p.value for p in q.qdq.metadata_props}
    assert meta["qdq_onnx.activation_scales"] == "calibrated:mse+refined"
    assert PlacementPlan.from_dict(q.plan.to_dict()).scale_refinement == record
    off = _calibrated(model, data)
    assert not off.plan.scale_refinement and off.calibration.refinement is None
    for key, factor in record["factors"].items():
        assert q.calibration.amax[key] == pytest.approx(off.calibration.amax[key] * factor,
                                                        rel=1e-3)
    # a method the user names gives its own ranges unless refinement is asked for
    named = pipeline.insert(model, calibration=pipeline.CalibrationConfig(
        method="max", show_progress=False), data=data)
    assert not named.plan.scale_refinement
    asked = pipeline.insert(model, calibration=pipeline.CalibrationConfig(
        method="max", refine_scales="on", show_progress=False), data=data)
    assert asked.plan.scale_refinement["method"] == "max"
    assert pipeline.lint(pipeline.type_remainder(q.qdq).model).findings == []


def test_the_budget_skips_large_models_unless_asked(data):
    model = _classifier()
    rules = default_rules()
    tight = dataclasses.replace(rules, scale_refinement=dataclasses.replace(
        rules.scale_refinement, max_cost=1e6))
    q = _calibrated(model, data)
    config = pipeline.CalibrationConfig(show_progress=False)
    result, note = rs.refine_plan(q.float_model, q.plan, q.calibration.amax, data, config,
                                  tight)
    assert result is None and "skipped" in note and "--refine-scales on" in note
    forced, note = rs.refine_plan(q.float_model, q.plan, q.calibration.amax, data,
                                  dataclasses.replace(config, refine_scales="on"), tight)
    assert note is None and forced.evaluations > 0
    # a budget that fits fewer samples than given uses fewer
    per_sample = forced.keys * len(rules.scale_refinement.factors) * \
        rules.scale_refinement.sweeps * rs.model_macs(q.float_model, data)
    some = dataclasses.replace(rules, scale_refinement=dataclasses.replace(
        rules.scale_refinement, max_cost=per_sample * 70))
    fewer, _ = rs.refine_plan(q.float_model, q.plan, q.calibration.amax, data, config, some)
    assert fewer.samples == 70
    once, note = rs.refine_plan(q.float_model, q.plan, q.calibration.amax,
                                (b for b in [data[:64]]), config, rules)
    assert once is None and "one-shot iterator" in note


def test_rule_files_without_the_section_and_fp8_are_left_alone(data):
    model = _classifier()
    toolkit = pipeline.insert(model, pipeline.PlacementConfig(rules="nvidia-tf-toolkit"),
                              pipeline.CalibrationConfig(show_progress=False), data=data)
    assert not toolkit.plan.scale_refinement  # the original toolkit's exact behaviour
    fp8 = pipeline.insert(model, pipeline.PlacementConfig(scheme="fp8"),
                          pipeline.CalibrationConfig(show_progress=False), data=data,
                          guard=pipeline.AccuracyGuardConfig(enabled=False))
    # FP8 ranges (max on a log grid) are not tuned; the INT8 ones of the FP8 policy's small
    # convolutions (TRT-F rules) are
    groups = fp8.plan.activation_groups()
    int8 = {k for k, m in groups.items() if not m[0].quantization.is_float}
    assert int8 and int8 != set(groups)
    assert fp8.plan.scale_refinement["keys"] == len(int8)
    assert set(fp8.plan.scale_refinement["factors"]) <= int8


def test_a_map_output_is_refined_by_its_noise_ratio(data):
    g = G(input_shape=("N", 3, 8, 8))
    h = g.unary("Relu", "r1", g.conv("c1", "x", 8))
    model = g.model([g.conv("c2", h, 4)])  # a dense prediction: no classes
    q = _calibrated(model, data)
    m, feeds = calibration_feeds(q.float_model, data, pipeline.CalibrationConfig(), 128)
    assert rs._output_kinds(m) == {"c2_out": ("values", None)}
    result = rs.refine_amax(m, q.plan, q.calibration.amax, feeds,
                            default_rules().scale_refinement, False)
    ref = inference_session(m).run(None, feeds[0])[0].astype(np.float64)
    for amax, value in ((q.calibration.amax, result.before), (result.amax, result.after)):
        got = np.concatenate([inference_session(insert_qdq(m, q.plan, amax)[0]).run(None, f)[0]
                              for f in feeds])
        ref = np.concatenate([inference_session(m).run(None, f)[0] for f in feeds])
        assert value == pytest.approx(np.sum((got - ref) ** 2) / np.sum(ref ** 2), rel=1e-5)
    assert result.after <= result.before


def test_settings_and_rule_file_errors(tmp_path):
    with pytest.raises(SettingError, match="refine_scales"):
        pipeline.CalibrationConfig(refine_scales="always")
    from qdq_onnx.placement.rules import load_rules

    base = (tmp_path / "base.yaml")
    text = ("schema: 1\nname: r\nscale_refinement:\n  id: X-1\n  name: x\n  reason: r\n"
            "  {extra}\n")
    for extra, message in (("factors: [0.5, 1]", "factors"),
                           ("factors: []", "factors"),
                           ("samples: 10\n  min_samples: 20", "min_samples"),
                           ("budget: 3", "budget")):
        base.write_text(text.format(extra=extra))
        with pytest.raises(QdqError, match=message):
            load_rules(base)
    base.write_text(text.format(extra="sweeps: 3"))
    policy = load_rules(base).scale_refinement
    assert policy.sweeps == 3 and policy.factors == default_rules().scale_refinement.factors


def test_cli_option_and_explain(data, tmp_path, capsys):
    from qdq_onnx.cli.main import main

    out, text = helpers.insert_explained(_classifier(), data, tmp_path, capsys)
    assert "scale refinement: divergence of the outputs" in text.err
    assert any(line.startswith("range  ") and "TRT-G002" in line
               for line in text.out.splitlines())
    assert main(["inspect", str(out)]) == 0
    assert "scale refinement (TRT-G002, 128 calibration samples)" in capsys.readouterr().out
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    assert "scale refinement</td><td>TRT-G002: " in (tmp_path / "r.html").read_text()
    assert main(["insert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "off.onnx"), "--refine-scales", "off"]) == 0
    meta = {p.key: p.value for p in onnx.load(tmp_path / "off.onnx").metadata_props}
    assert meta["qdq_onnx.activation_scales"] == "calibrated:mse"
    with pytest.raises(SystemExit):
        main(["insert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
              "-o", str(tmp_path / "x.onnx"), "--refine-scales", "always"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_range_near_float32s_limit_is_not_pushed_past_it(data):
    # an attention mask's -3.4e38 gives a range at float32's limit: x1.12 would overflow
    q = _calibrated(_classifier(), data)
    m, feeds = calibration_feeds(q.float_model, data, pipeline.CalibrationConfig(), 64)
    key = next(iter(q.plan.activation_groups()))
    amax = {**q.calibration.amax, key: 3.0e38}
    result = rs.refine_amax(m, q.plan, amax, feeds, default_rules().scale_refinement, False)
    assert np.isfinite(np.float32(result.amax[key])) and result.amax[key] <= 3.0e38
