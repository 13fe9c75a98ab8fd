"""The range guard keeps FP32 what FP16 would lose, from data and from the weights, and
records each island in the plan with its rule id; without the guard the same models
overflow or underflow."""

import numpy as np
import onnx
import pytest
from helpers import fp16_overflow_model as _model
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import PlacementPlan, pipeline
from qdq_onnx.graph.sessions import inference_session

X = np.random.default_rng(3).normal(size=(64, 16)).astype(np.float32)


def _typed(model, guard=True, data=X):
    q = pipeline.insert(model, data=data)
    return q, pipeline.type_remainder(q.qdq, pipeline.PrecisionConfig(range_guard=guard),
                                      data=data)


def _run(model):
    return inference_session(model).run(None, {"x": X})[0]


def test_a_tensor_past_65504_stays_fp32_and_is_in_the_plan():
    q, typed = _typed(_model())
    kept = {k.node: k for k in typed.kept_fp32}
    assert set(kept) == {"square", "root"}
    assert {k.rule for k in kept.values()} == {"TRT-H001"}
    assert kept["square"].tensor == "big" and kept["square"].value > 65504
    plan = PlacementPlan.from_dict(__import__("json").loads(
        {p.key: p.value for p in typed.model.metadata_props}["qdq_onnx.plan"]))
    assert {k.node for k in plan.kept_fp32} == {"square", "root"}
    assert plan.high_precision == "fp16"
    want, got = _run(q.qdq), _run(typed.model)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * np.abs(want).max())
    report = pipeline.lint(typed.model)
    assert report.findings == [] and len(report.kept_fp32) == 2


def _in_file_types(model):
    """The model evaluated op by op in the types the file gives each tensor (ONNX's
    reference evaluator), as a strongly typed TensorRT build runs it: onnxruntime's CPU runs
    FP16 ops through FP32 kernels and drops the Casts between neighbours, which hides an
    FP16 overflow inside a chain of ops."""
    import warnings

    from onnx.reference import ReferenceEvaluator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow being shown
        return ReferenceEvaluator(model).run(None, {"x": X})[0]


def test_without_the_guard_the_same_model_overflows():
    _, unguarded = _typed(_model(), guard=False)
    assert unguarded.kept_fp32 == []
    assert np.isinf(_in_file_types(unguarded.model)).any()  # the square overflowed in FP16
    _, guarded = _typed(_model())
    assert np.all(np.isfinite(_in_file_types(guarded.model)))


def test_small_activations_keep_fp16():
    _, typed = _typed(_model(weight_scale=1.0))
    assert typed.kept_fp32 == []


def test_a_weight_past_65504_keeps_its_op_fp32():
    big = numpy_helper.from_array(np.array([1e5] * 8, np.float32), "huge")
    node = helper.make_node("Min", ["back", "huge"], ["back2"], name="huge_mul")
    model = _model(weight_scale=1.0, extra=[(node, big)])
    model.graph.node[-1].input[0] = "back2"
    _, typed = _typed(model)
    rules = {k.node: k.rule for k in typed.kept_fp32}
    assert rules["huge_mul"] == "TRT-H003"


def test_a_denormal_only_weight_keeps_its_op_fp32():
    tiny = numpy_helper.from_array(np.full(8, 3e-6, np.float32), "tiny")
    node = helper.make_node("Add", ["back", "tiny"], ["back2"], name="tiny_add")
    model = _model(weight_scale=1.0, extra=[(node, tiny)])
    model.graph.node[-1].input[0] = "back2"
    _, typed = _typed(model, data=None)  # the weight guard needs no data
    assert {k.node: k.rule for k in typed.kept_fp32} == {"tiny_add": "TRT-H004"}
    assert any("no data" in n for n in typed.notes)


def test_a_large_sum_stays_fp32_in_fp16_and_bf16():
    g = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], name="sum", keepdims=0),
         helper.make_node("Relu", ["s"], ["out"], name="relu")], "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 300, 300])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    for kind in ("fp16", "bf16"):
        typed = pipeline.type_remainder(m, pipeline.PrecisionConfig(high_precision=kind))
        assert [(k.node, k.rule, k.value) for k in typed.kept_fp32] == \
            [("sum", "TRT-H005", 90000.0)], kind


@pytest.mark.parametrize("bad, message", [
    ({"kind": "nope"}, "kind must be one of"),
    ({"limit": None}, "needs a positive limit"),
    ({"types": ["fp32"]}, "types must be fp16 and/or bf16"),
])
def test_bad_guard_entries_name_the_problem(bad, message):
    from qdq_onnx.errors import QdqError
    from qdq_onnx.placement.rules import parse_rules

    guard = {"id": "X1", "name": "x", "kind": "activation_max", "types": ["fp16"],
             "limit": 10, "reason": "r", **bad}
    guard = {k: v for k, v in guard.items() if v is not None}
    raw = {"schema": 1, "name": "t", "precision": {"guards": [guard]}}
    with pytest.raises(QdqError, match=message):
        parse_rules(raw)


def test_the_island_survives_a_plan_round_trip():
    _, typed = _typed(_model())
    text = {p.key: p.value for p in typed.model.metadata_props}["qdq_onnx.plan"]
    plan = PlacementPlan.from_dict(__import__("json").loads(text))
    again = PlacementPlan.from_dict(plan.to_dict())
    assert again.kept_fp32 == plan.kept_fp32 and again.counts()["kept_fp32"] == 2
    onnx.checker.check_model(typed.model, full_check=True)
