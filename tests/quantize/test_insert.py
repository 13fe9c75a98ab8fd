"""Insertion numerics, calibration (max), provenance, refusal of already-quantized graphs."""

import helpers
import numpy as np
import onnx
import pytest
from helpers import G, run
from onnx import numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.errors import QdqError
from qdq_onnx.files.metadata import PLAN_KEY, RULE_KEY, get_metadata
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.quantize.scales import MIN_SCALE, fake_quant
from qdq_onnx.types.scheme import INT8


def _model():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.bn("bn0", g.conv("c0", "x", 8)))
    b = g.conv("c1", a, 8)
    y = g.binary("Add", "add", a, b)
    z = g.node("GlobalAveragePool", "gap", [y])
    return g.model([z])


def _x(n=1):
    return helpers.RNG.uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32)


def test_output_checks_runs_and_stays_within_quantization_error():
    m = _model()
    calib = [_x() for _ in range(8)]
    q = quantize_model(m, calibration_data=calib)
    onnx.checker.check_model(q.onnx, full_check=True)
    assert q.onnx.ir_version <= 10
    assert not q.report.placeholder_scales
    for x in calib[:3]:
        a, b = run(m, x)[0], run(q.onnx, x)[0]
        assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_every_qdq_node_is_int8_symmetric_and_names_its_rule():
    q = quantize_model(_model())
    inits = {t.name: numpy_helper.to_array(t) for t in q.onnx.graph.initializer}
    qdq = [n for n in q.onnx.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
        assert np.all(inits[n.input[1]] > 0)
        rules = [p.value for p in n.metadata_props if p.key == RULE_KEY]
        assert rules and rules[0].startswith("TRT-")
    plan = PlacementPlan.from_dict(__import__("json").loads(get_metadata(q.onnx, PLAN_KEY)))
    assert plan.counts() == q.plan.counts()


def test_max_calibration_gives_amax_over_127_exactly():
    g = G(input_shape=(1, 2, 4, 4))
    y = g.conv("c0", "x", 2)
    m = g.model([y])
    data = helpers.RNG.uniform(-3, 3, (10, 2, 4, 4)).astype(np.float32)
    data[7, 1, 2, 3] = -4.25  # the known max |x|
    q = quantize_model(m, calibration_data=data, calibration_batch_size=3,
                       calibration_method="max")
    dq = next(n for n in q.onnx.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0].startswith("x_"))
    scale = next(numpy_helper.to_array(t) for t in q.onnx.graph.initializer
                 if t.name == dq.input[1])
    assert scale == np.float32(4.25) / np.float32(127)


def test_weight_scales_are_per_channel_max_abs_and_zero_channel_gets_min_scale():
    g = G(input_shape=(1, 2, 4, 4))
    y = g.conv("c0", "x", 3)
    m = g.model([y])
    w = next(t for t in m.graph.initializer if t.name == "c0_w")
    arr = numpy_helper.to_array(w).copy()
    arr[1] = 0.0
    w.CopyFrom(numpy_helper.from_array(arr, "c0_w"))
    q = quantize_model(m)
    assert q.report.zero_weight_channels == {"c0_w": 1}
    dq = next(n for n in q.onnx.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0].startswith("c0_w"))
    scale = next(numpy_helper.to_array(t) for t in q.onnx.graph.initializer
                 if t.name == dq.input[1])
    expected = np.abs(arr).reshape(3, -1).max(axis=1) / 127
    assert scale[1] == MIN_SCALE
    np.testing.assert_array_equal(scale[[0, 2]], expected[[0, 2]].astype(np.float32))


def test_qdq_weight_matches_reference_fake_quant():
    g = G(input_shape=(1, 2, 4, 4))
    y = g.conv("c0", "x", 3, bias=False)
    m = g.model([y])
    q = quantize_model(m, quantization_spec=None)
    w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "c0_w"))
    scale = (np.abs(w).reshape(3, -1).max(axis=1) / 127).astype(np.float32)
    wq = fake_quant(w, scale.reshape(3, 1, 1, 1), INT8)
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    for t in ref.graph.initializer:
        if t.name == "c0_w":
            t.CopyFrom(numpy_helper.from_array(wq, "c0_w"))
    x = helpers.RNG.uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)
    # With the activation quantized too, compare against the reference on a Q/DQ'd input.
    act_scale = np.float32(6.0 / 127)
    out_q = run(q.onnx, x)[0]
    out_ref = run(ref, fake_quant(x, act_scale, INT8))[0]
    np.testing.assert_allclose(out_q, out_ref, rtol=1e-5, atol=1e-6)


def test_already_quantized_is_refused_unless_forced():
    q = quantize_model(_model())
    with pytest.raises(QdqError, match="already contains QuantizeLinear"):
        quantize_model(q.onnx)


def test_calibration_shared_concat_scale_is_max_of_inputs():
    from qdq_onnx.placement.rules import parse_rules

    g = G(input_shape=(1, 2, 4, 4))
    a = g.conv("c0", "x", 2)
    b = g.unary("Relu", "r", g.conv("c1", "x", 2))
    y = g.node("Concat", "cat", [a, b], axis=1)
    rules = parse_rules({"schema": 1, "name": "t", "op_rules": [], "patterns": {
        "concat": {"id": "C", "name": "c", "reason": "r", "mode": "shared"}}})
    m = g.model([y])
    data = helpers.RNG.uniform(-1, 1, (4, 2, 4, 4)).astype(np.float32)
    q = quantize_model(m, rules=rules, calibration_data=data, calibration_method="max")
    scales = {n.input[0]: numpy_helper.to_array(
        next(t for t in q.onnx.graph.initializer if t.name == n.input[1]))
        for n in q.onnx.graph.node if n.op_type == "QuantizeLinear"}
    assert len(scales) == 2 and len(set(float(s) for s in scales.values())) == 1
    outs = np.concatenate([run(m, data[i:i + 1])[0] for i in range(len(data))])
    fa, fb = outs[:, :2], outs[:, 2:]
    amax = max(np.abs(fa).max(), np.abs(fb).max())
    assert float(next(iter(scales.values()))) == pytest.approx(amax / 127, rel=1e-6)


def test_bad_calibration_data_is_reported_before_work():
    m = _model()
    with pytest.raises(QdqError, match=r"dimension 1: 8 != 3.*NHWC vs NCHW"):
        quantize_model(m, calibration_data=np.zeros((2, 8, 8, 3), np.float32))
    bad = _x(2)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(QdqError, match="NaN"):
        quantize_model(m, calibration_data=bad)


def test_file_format_metadata_keys_are_stable():
    """Files written by earlier versions must stay readable: the metadata keys are part of
    the file format, spelled out here rather than through the constants."""
    import json

    g = G(input_shape=(1, 4, 8, 8))
    model = g.model([g.conv("c2", g.unary("Relu", "r", g.conv("c1", "x", 4)), 4)])
    out = quantize_model(model, calibration_data=np.ones((2, 4, 8, 8), np.float32)).onnx
    meta = {p.key: p.value for p in out.metadata_props}
    assert set(meta) == {"qdq_onnx.plan", "qdq_onnx.activation_scales", "qdq_onnx.weight_bits"}
    assert json.loads(meta["qdq_onnx.plan"])["format"] == "qdq-onnx-plan"
    rules = {p.key: p.value for n in out.graph.node if n.op_type == "QuantizeLinear"
             for p in n.metadata_props}
    assert set(rules) == {"qdq_onnx.rule"}
