"""INT8 files with an FP16 remainder that onnxruntime computes as written at its default
level: its WeightBiasQuantization turns a Conv's float bias into int32 dividing in FP16,
and a large bias (a stem's) or a dead channel (weights ~0, a product of scales that is 0 in
FP16) made that int32 garbage. The typing stage raises those channels' weight scales."""

import numpy as np
import pytest
from helpers import G
from onnx import numpy_helper

from qdq_onnx import pipeline
from qdq_onnx.precision.bias_headroom import QUOTIENT_LIMIT, raise_bias_headroom

X = np.random.default_rng(0).normal(size=(32, 3, 12, 12)).astype(np.float32)


def _model():
    """Conv -> Relu -> Conv -> Relu -> GlobalAveragePool: c0's channel 0 has a bias of 40
    (60x its largest product), channel 1 weights of 1e-7."""
    g = G(input_shape=("N", 3, 12, 12))
    h = g.unary("Relu", "r0", g.conv("c0", "x", 8))
    out = g.node("GlobalAveragePool", "gap", [g.unary("Relu", "r1", g.conv("c1", h, 8))])
    return _edited(g.model([out]), {"c0_b": lambda a: a.__setitem__(0, 40.0),
                                    "c0_w": lambda a: a.__setitem__(1, a[1] * 1e-7)})


def _edited(model, edits):
    """`model` with each named initializer changed in place by its edit."""
    inits = {t.name: t for t in model.graph.initializer}
    for name, edit in edits.items():
        a = numpy_helper.to_array(inits[name]).copy()
        edit(a)
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    return model


def _run(model, level, x=X):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _sqnr(want, got):
    return float(10 * np.log10(np.sum(want.astype(np.float64) ** 2)
                               / np.sum((want.astype(np.float64) - got) ** 2)))


def _typed(model):
    q = pipeline.insert(model, data=X, guard=pipeline.AccuracyGuardConfig(enabled=False))
    return pipeline.type_remainder(q.qdq, data=X)


def test_the_int8_fp16_file_computes_the_same_at_onnxruntimes_default_level():
    import onnxruntime as ort

    model = _model()
    typed = _typed(model)
    note = next(line for line in typed.lines() if line.startswith("bias headroom"))
    assert "2 channel(s) in 1 layer(s)" in note and "c0_w" in note
    unoptimized = _run(typed.model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    default = _run(typed.model, ort.SessionOptions().graph_optimization_level)
    assert _sqnr(_run(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), unoptimized) > 25
    assert _sqnr(unoptimized, default) > 35  # FP16 rounding apart


def test_without_the_headroom_the_rewrite_overflows_and_only_those_channels_move(
        monkeypatch):
    """The same file typed without the raise: only c0's channels 0 and 1 differ, by powers
    of two, and onnxruntime's default level computes garbage from it (where it has the
    rewrite: 1.20 and later)."""
    import onnxruntime as ort

    import qdq_onnx.precision.stage as stage
    from qdq_onnx.precision.bias_headroom import Headroom

    model = _model()
    raised = _typed(model).model
    assert raise_bias_headroom(raised).raised == {}  # the raise leaves nothing to raise
    monkeypatch.setattr(stage, "raise_bias_headroom", lambda model: Headroom())
    plain = _typed(model).model
    scales = [{t.name: numpy_helper.to_array(t).astype(np.float64)
               for t in m.graph.initializer if t.name.endswith("_w_scale")}
              for m in (raised, plain)]
    assert scales[0].keys() == scales[1].keys() == {"c0_w_scale", "c1_w_scale"}
    assert np.array_equal(scales[0]["c1_w_scale"], scales[1]["c1_w_scale"])
    new, old = scales[0]["c0_w_scale"], scales[1]["c0_w_scale"]
    changed = np.flatnonzero(new != old)
    assert changed.tolist() == [0, 1]  # the large bias and the dead channel, no other
    ratio = np.log2(new[0] / old[0])
    assert ratio == round(ratio) >= 1  # a power of two
    unoptimized = _run(plain, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    default = _run(plain, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    if tuple(int(v) for v in ort.__version__.split(".")[:2]) < (1, 20):
        pytest.skip("onnxruntime < 1.20 has no WeightBiasQuantization")
    assert _sqnr(unoptimized, default) < 20


def test_the_quotient_stays_under_the_limit_as_onnxruntime_rounds_it():
    typed = _typed(_model()).model
    inits = {t.name: numpy_helper.to_array(t) for t in typed.graph.initializer}
    x_scale = next(v for k, v in inits.items() if k.endswith("_scale") and v.size == 1
                   and k.startswith("r0"))
    product = (x_scale.astype(np.float32) * inits["c0_w_scale"].astype(np.float32)
               ).astype(np.float16).astype(np.float64)
    bias = np.abs(inits["c0_b"].astype(np.float64))
    assert (product > 0).all() and (bias / product <= QUOTIENT_LIMIT).all()


def test_fp32_and_bf16_remainders_are_left_alone():
    q = pipeline.insert(_model(), data=X, guard=pipeline.AccuracyGuardConfig(enabled=False))
    for kind in ("fp32", "bf16"):
        typed = pipeline.type_remainder(q.qdq, pipeline.PrecisionConfig(high_precision=kind),
                                        data=X)
        assert not any(line.startswith("bias headroom") for line in typed.lines())


def test_a_matmul_with_its_bias_add_is_covered_too():
    """onnxruntime first fuses MatMul + Add into a Gemm (MatMulAddFusion), then rewrites
    that Gemm's bias: the same overflow, so the same raise (weights' axis 1)."""
    import onnxruntime as ort
    from helpers import mlp

    model = _edited(mlp(widths=(16, 16)), {
        "b0": lambda a: a.__setitem__(slice(0, 2), [40.0, 0.5]),
        "w0": lambda a: a.__setitem__((slice(None), 1), a[:, 1] * 1e-7)})
    x = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    q = pipeline.insert(model, data=x, guard=pipeline.AccuracyGuardConfig(enabled=False))
    typed = pipeline.type_remainder(q.qdq, data=x)
    note = next(line for line in typed.lines() if line.startswith("bias headroom"))
    assert "2 channel(s) in 1 layer(s)" in note and "w0" in note
    unoptimized = _run(typed.model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, x)
    default = _run(typed.model, ort.SessionOptions().graph_optimization_level, x)
    assert _sqnr(unoptimized, default) > 35
