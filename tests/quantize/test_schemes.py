"""Precision schemes: INT8 as TensorRT quantizes, narrowed ranges inside it, the scheme
on every placement of the plan (from the rule file, or a weight scheme), and every stage
reading it: insertion, calibration levels, the fake-quant range, lint, inspect."""

import json

import numpy as np
import onnx
import pytest
from helpers import G
from onnx import numpy_helper

from qdq_onnx import PlacementPlan, pipeline, quantize_model
from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.fake_quant import lower_to_fake_quant
from qdq_onnx.placement.rules import load_rules
from qdq_onnx.quantize.scales import amax_to_scale, quantize_dequantize
from qdq_onnx.types.scheme import INT8, scheme_named


def _model():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    return g.model([g.binary("Add", "add", a, g.conv("c1", a, 4))])


def test_scale_arithmetic_reads_the_scheme():
    scale, _ = amax_to_scale(np.float32(7.0), scheme_named("int8-4bit"))
    assert scale == np.float32(1.0)
    x = np.array([-9.0, -8.0, 3.4, 7.6], np.float32)
    out, clipped = quantize_dequantize(x, np.float32(1.0), scheme_named("int8-4bit"))
    assert out.tolist() == [-8.0, -8.0, 3.0, 7.0] and clipped == 2
    assert quantize_dequantize(x * 20, np.float32(1.0), INT8)[0].tolist() == \
        [-128.0, -128.0, 68.0, 127.0]


def test_every_placement_carries_a_scheme_in_the_plan_and_the_file(tmp_path):
    q = pipeline.insert(_model())
    assert {p.scheme for p in q.plan.placements} == {"int8"}
    plan = json.loads(next(p.value for p in q.qdq.metadata_props if p.key == "qdq_onnx.plan"))
    assert all(p["scheme"] == "int8" for p in plan["placements"])
    assert {r.scheme for r in pipeline.inspect(q.qdq).quantized_inputs} == {"int8"}
    q.plan.save(tmp_path / "plan.json")
    assert PlacementPlan.load(tmp_path / "plan.json").schemes() == ["int8"]


def test_a_weight_scheme_narrows_weights_only_and_every_stage_follows(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32)
    # 4-bit weights are an experiment the accuracy guard would undo layer by layer (it
    # measures their loss against the float model): off, to check the scheme itself.
    q = pipeline.insert(_model(), pipeline.PlacementConfig(weight_scheme="int8-4bit"),
                        data=x, guard=pipeline.AccuracyGuardConfig(enabled=False))
    schemes = {(p.kind, p.scheme) for p in q.plan.placements}
    assert schemes == {("activation", "int8"), ("weight", "int8-4bit")}
    for p in q.plan.weights():  # insertion: max|w| per channel maps to 7
        w = numpy_helper.to_array(next(t for t in q.qdq.graph.initializer
                                       if t.name == p.tensor))
        scale = numpy_helper.to_array(next(t for t in q.qdq.graph.initializer
                                           if t.name == f"{p.tensor}_scale"))
        np.testing.assert_allclose(scale, np.abs(w).reshape(len(w), -1).max(1) / 7, rtol=1e-6)
    train = lower_to_fake_quant(q.qdq)  # fine-tuning: the range the plan gives
    assert {w.scheme.name for w in train.weights} == {"int8-4bit"}
    assert train.weight_bits == 4
    assert pipeline.lint(pipeline.type_remainder(q.qdq).model).findings == []  # TensorRT-clean
    meta = {p.key: p.value for p in q.qdq.metadata_props}
    assert meta["qdq_onnx.weight_bits"] == "4"


def test_a_file_written_before_plans_named_schemes_reads_its_weight_bits():
    q = quantize_model(_model(), weight_scheme="int8-4bit")
    old = onnx.ModelProto()
    old.CopyFrom(q.onnx)
    for prop in old.metadata_props:
        if prop.key == "qdq_onnx.plan":
            plan = json.loads(prop.value)
            for p in plan["placements"]:
                del p["scheme"]
            prop.value = json.dumps(plan)
    assert {w.scheme.name for w in lower_to_fake_quant(old).weights} == {"int8-4bit"}


def test_rule_files_name_schemes_and_reject_unknown_ones(tmp_path):
    rules = load_rules("tensorrt")
    assert rules.scheme == "int8" and rules.schemes() == ["int8"]
    assert all(r.scheme == "int8" for r in rules.op_rules)
    assert rules.scheme_for("Conv") == "int8" and rules.scheme_for("Softmax") == "int8"
    bad = tmp_path / "r.yaml"
    bad.write_text("schema: 1\nname: r\nscheme: int3\nop_rules: []\n")
    with pytest.raises(QdqError, match=r"r\.yaml:1.*names no precision scheme: 'int3'"):
        load_rules(str(bad))


def test_calibration_levels_follow_the_scheme():
    """mse and the clipping guard count the levels of the tensor's scheme: a 4-bit range
    has fewer levels, so it clips further in to keep rounding noise down."""
    from qdq_onnx.quantize.histogram import TensorStats
    from qdq_onnx.quantize.methods import amax_mse

    values = np.abs(np.random.default_rng(1).laplace(0, 1, 100_000)).astype(np.float32)
    s = TensorStats(bins=2048)
    s.update(values, True)
    assert amax_mse(s, scheme_named("int8-4bit")) < amax_mse(s, INT8)
    assert s.estimated_sqnr_db(3.0, scheme_named("int8-4bit")) < s.estimated_sqnr_db(3.0, INT8)
