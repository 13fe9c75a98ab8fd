"""FP8 files that real clients accept (issue 27, part 4): onnxruntime loads them at its
default optimization level and computes what the unoptimized session computes, `polygraphy
check lint` passes, and the rule file's FP8 policy puts FP8 on GEMMs and keeps INT8 on
depthwise, narrow and large-kernel convolutions, each decision in the plan with its rule id.

What broke the clients before (qdq_onnx/quantize/fp8_files.py): onnxruntime's int32 bias
rewrite overflowing FP16 for FP8 scales (a wrong model from ORT_ENABLE_BASIC up), its Q/DQ
propagation putting FP8 on a Squeeze or an opset-19 Reshape (1.31: no kernel, the model is
refused), and polygraphy's per-node fallback then mistyping FP8 tensors as uint8."""

import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import G, fp8_cnn, fp8_everywhere_rules, small_classifier

from qdq_onnx import pipeline
from qdq_onnx.errors import QdqError
from qdq_onnx.placement.rules import load_rules
from qdq_onnx.quantize.fp8_files import BIAS_QUOTIENT_LIMIT, headroom_bits
from qdq_onnx.quantize.scales import fp8_round

X = np.random.default_rng(0).normal(size=(32, 3, 12, 12)).astype(np.float32)
RULES = load_rules("tensorrt")


def _fp8(model, data=X):
    q = pipeline.insert(model, pipeline.PlacementConfig(scheme="fp8"),
                        pipeline.CalibrationConfig(method="max"), data=data)
    return q, pipeline.type_remainder(q.qdq, data=data).model  # the FP16 remainder


def _run(model, level, x=X):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _sqnr(want, got):
    return float(10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2)))


def _decided(plan):
    """consumer -> (scheme, the FP8 policy rule id) of each weighted layer."""
    return {p.consumer: (p.scheme, p.rule.split(",")[-1]) for p in plan.weights()}


def test_the_fp8_policy_keeps_gemms_fp8_and_depthwise_and_narrow_convs_int8():
    q, typed = _fp8(fp8_cnn("Flatten", depthwise=True))
    assert _decided(q.plan) == {"stem": ("int8", "TRT-F002"), "dw": ("int8", "TRT-F001"),
                                "body": ("fp8", "TRT-F005"), "fc": ("fp8", "TRT-F004")}
    for p in q.plan.placements:  # each input of a layer in the layer's scheme
        if p.consumer in ("stem", "dw", "body", "fc"):
            assert p.scheme == _decided(q.plan)[p.consumer][0], p
    axes = {p.consumer: p.axis for p in q.plan.weights()}
    assert axes == {"stem": 0, "dw": 0, "body": None, "fc": None}  # INT8 per channel
    reasons = {p.consumer: p.reason for p in q.plan.weights()}
    assert "no optimized FP8 depthwise" in reasons["dw"] and "group 16" in reasons["dw"]
    assert "3 input and 16 output channels" in reasons["stem"]
    assert any("FP8 policy: 2 FP8, 2 INT8 of 4 weighted layers" in n for n in q.plan.notes)
    inits = {t.name: t.data_type for t in q.qdq.graph.initializer}
    zp_type = {n.name: inits[n.input[2]] for n in q.qdq.graph.node
               if n.op_type == "DequantizeLinear"}
    assert set(zp_type.values()) == {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN}
    report = pipeline.lint(typed)  # lint reads the file as placement wrote it
    assert report.findings == []
    assert {la.node: la.scheme for la in report.layers} == {
        c: s for c, (s, _) in _decided(q.plan).items()}


def test_a_large_kernel_conv_keeps_int8_and_so_does_the_layer_sharing_its_input_pair():
    g = G(input_shape=("N", 16, 12, 12))
    big = g.conv("big", "x", 16, kernel=7)  # 49 elements > 32: TRT-F003
    wide = g.conv("wide", "x", 32)  # reads x too: one Q/DQ pair for both
    pooled = [g.node("GlobalAveragePool", f"gap_{n}", [t]) for n, t in (("a", big),
                                                                          ("b", wide))]
    x = np.random.default_rng(1).normal(size=(8, 16, 12, 12)).astype(np.float32)
    q, _ = _fp8(g.model(pooled), data=x)
    assert _decided(q.plan) == {"big": ("int8", "TRT-F003"), "wide": ("int8", "TRT-F003")}
    reason = next(p.reason for p in q.plan.weights() if p.consumer == "wide")
    assert "through big" in reason and "one pair has one type" in reason


@pytest.mark.parametrize("flatten", ["Squeeze", "Flatten", "Reshape"])
@pytest.mark.parametrize("depthwise", [False, True])
def test_onnxruntime_default_level_computes_what_the_unoptimized_session_does(flatten,
                                                                            depthwise):
    import onnxruntime as ort

    model = fp8_cnn(flatten, depthwise)
    q, typed = _fp8(model)
    assert typed.opset_import[0].version >= 21  # onnxruntime 1.31's FP8 Reshape/Transpose
    assert q.report.fp8_headroom  # the FP8 Conv and Gemm: biases large beside their weights
    assert q.report.flattened == (["squeeze"] if flatten == "Squeeze" else [])
    unoptimized = _run(typed, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    default = _run(typed, ort.SessionOptions().graph_optimization_level)  # ORT_ENABLE_ALL
    basic = _run(typed, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    float_out = _run(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert _sqnr(float_out, unoptimized) > 25  # FP8/INT8 quantization noise: ~32 dB
    # the levels differ only by FP16 rounding (onnxruntime folds some DQs in FP16): before
    # the fix, 3-4 dB (the int32 bias rewrite overflowing FP16)
    assert _sqnr(unoptimized, default) > 40 and _sqnr(unoptimized, basic) > 40


def test_the_bias_headroom_moves_no_fp8_value_but_the_smallest():
    w = np.random.default_rng(2).normal(0, 0.05, 4096).astype(np.float32)
    scale = np.float32(np.abs(w).max() / 448)
    bits = headroom_bits(np.array([3.0]), 0.02, float(scale))
    assert bits > 0
    assert 3.0 / (0.02 * scale * 2 ** bits) <= BIAS_QUOTIENT_LIMIT
    assert 3.0 / (0.02 * scale * 2 ** (bits - 1)) > BIAS_QUOTIENT_LIMIT  # the smallest
    raised = np.float32(scale * 2 ** bits)
    before, after = fp8_round(w / scale) * scale, fp8_round(w / raised) * raised
    normal = np.abs(w) >= raised * 2.0 ** -6  # still in E4M3's normal range
    np.testing.assert_array_equal(before[normal], after[normal])
    assert normal.mean() > 0.95
    assert headroom_bits(np.array([0.01]), 0.01, float(scale)) == 0  # no room needed
    assert headroom_bits(None, 0.01, float(scale)) == 0


def test_polygraphy_lint_passes_on_the_fp8_file(tmp_path):
    _, typed = _fp8(fp8_cnn("Squeeze", depthwise=True))
    path = tmp_path / "fp8.onnx"
    onnx.save(typed, path)
    code = ("import sys; from polygraphy.tools import main; "
            f"sys.argv = ['polygraphy', 'check', 'lint', {str(path)!r}]; sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "PASSED" in out, out[-3000:]


def test_an_fp8_rule_without_a_scheme_is_refused_with_its_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("schema: 1\nname: t\nfp8:\n  - id: F\n    name: f\n    ops: [Conv]\n"
                 "    grouped: true\n    reason: r\n")
    with pytest.raises(QdqError, match=re.escape(f"{p}:") + r"\d+: fp8 rule F needs a"):
        load_rules(p)
    assert [r.id for r in RULES.fp8] == ["TRT-F001", "TRT-F002", "TRT-F003", "TRT-F004",
                                         "TRT-F005"]


def test_a_relu_before_an_fp8_pair_in_fp32_is_reported_and_fp16_is_clear_of_it():
    """onnxruntime's ReluQuantFusion drops a Relu before a float8 QuantizeLinear (it only
    checks INT8/UINT8 zero points): the FP32 remainder says so, the FP16 one runs the same
    at every level."""
    import onnxruntime as ort

    x = X[:, :, :8, :8]  # small_classifier reads 3x8x8
    q = pipeline.insert(small_classifier(), pipeline.PlacementConfig(
        scheme="fp8", rules=fp8_everywhere_rules()), data=x)
    fp32 = pipeline.type_remainder(q.qdq, pipeline.PrecisionConfig("fp32"))
    assert any("ReluQuantFusion" in line and "'r'" in line for line in fp32.lines())
    levels = ort.GraphOptimizationLevel
    off, full = levels.ORT_DISABLE_ALL, levels.ORT_ENABLE_ALL
    assert not np.allclose(_run(fp32.model, off, x), _run(fp32.model, full, x), atol=1e-3)
    fp16 = pipeline.type_remainder(q.qdq, data=x)
    assert not any("ReluQuantFusion" in line for line in fp16.lines())
    np.testing.assert_allclose(_run(fp16.model, off, x), _run(fp16.model, full, x), atol=1e-2)
    int8 = pipeline.type_remainder(pipeline.insert(small_classifier(), data=x).qdq,
                                   pipeline.PrecisionConfig("fp32"))
    assert not any("ReluQuantFusion" in line for line in int8.lines())
