"""The rule file's cost model: a narrow classifier head stays in the float remainder with a
recorded reason, what the user names wins, the original toolkit's rules are unchanged, and
lint agrees with every decision."""

from __future__ import annotations

import copy

import helpers
import numpy as np
import pytest
from helpers import G

from qdq_onnx import QuantizationSpec, pipeline
from qdq_onnx.errors import QdqError
from qdq_onnx.files.yaml_lines import load_yaml
from qdq_onnx.graph.macs import layer_costs, quantized_macs_share
from qdq_onnx.placement.rules import bundled_rule_files, parse_rules


def _build_model(classes: int, conv: bool = True):
    rng = helpers.RNG  # seeded by the wrapper below
    g = G(input_shape=("N", 4, 8, 8))
    h = g.unary("Relu", "r1", g.conv("c1", "x", 16)) if conv else "x"
    flat = g.node("Flatten", "flat", [g.node("GlobalAveragePool", "gap", [h])])
    k = 16 if conv else 4
    return g.model([g.node("Gemm", "head", [flat, g.w("head_w", rng.normal(0, 1, (classes, k))),
                                            g.w("head_b", np.zeros(classes))], transB=1)])

def _model(classes: int, conv: bool = True):
    """The model, its weights drawn from a seeded generator; the helpers' shared one is
    put back so later tests draw what they always drew."""
    saved, helpers.RNG = helpers.RNG, np.random.default_rng(3)
    try:
        return _build_model(classes, conv)
    finally:
        helpers.RNG = saved


def _weights(plan) -> set[str]:
    return {p.consumer for p in plan.weights()}


def test_a_ten_way_head_stays_in_the_remainder_with_its_reason():
    plan = pipeline.plan_placement(_model(10))
    assert _weights(plan) == {"c1"}
    kept = [d for d in plan.left_float if d.consumer == "head"]
    assert {d.rule for d in kept} == {"TRT-K001"} and {d.input for d in kept} == {0, 1}
    assert "10 output channels, 16 input channels, 160 MACs" in kept[0].reason
    assert _weights(pipeline.plan_placement(_model(16))) == {"c1", "head"}  # 16: not narrow


def test_the_user_and_the_original_toolkit_quantize_the_head():
    spec = QuantizationSpec().add("head")
    plan = pipeline.plan_placement(_model(10), pipeline.PlacementConfig(spec=spec))
    assert _weights(plan) == {"c1", "head"}
    toolkit = pipeline.plan_placement(_model(10),
                                      pipeline.PlacementConfig(rules="nvidia-tf-toolkit"))
    assert _weights(toolkit) == {"c1", "head"}
    # a model of nothing but a narrow layer: quantizing it is the only thing asked
    assert _weights(pipeline.plan_placement(_model(10, conv=False))) == {"head"}


def test_lint_agrees_and_the_macs_share_counts_only_quantized_layers():
    x = np.random.default_rng(0).normal(size=(16, 4, 8, 8)).astype(np.float32)
    q = pipeline.insert(_model(10), data=x)
    typed = pipeline.type_remainder(q.qdq).model
    report = pipeline.lint(typed)
    assert report.findings == []
    assert {r.node: r.kept_float for r in report.layers} == {"c1": None, "head": "TRT-K001"}
    costs = layer_costs(typed)
    assert costs["c1"].macs == 8 * 8 * 16 * 4 * 9 and costs["head"].macs == 16 * 10
    share = quantized_macs_share(typed)
    assert share == pytest.approx(costs["c1"].macs / (costs["c1"].macs + 160))
    # another tool's file (no plan): the float head is lost coverage, said as before
    stripped = copy.deepcopy(typed)
    del stripped.metadata_props[:]
    assert {f.id for f in pipeline.lint(stripped).findings} == {"TRT-L001", "TRT-L002"}


def test_lint_agrees_with_the_layers_a_spec_left_float():
    """What the user's spec left float is the user's choice, recorded in the plan, so lint
    does not call it lost coverage (inspect lists it); a slot the plan did not leave float
    still is."""
    import json

    from qdq_onnx.files.metadata import PLAN_KEY, get_metadata, set_metadata

    x = np.random.default_rng(0).normal(size=(16, 4, 8, 8)).astype(np.float32)
    spec = QuantizationSpec().add("c1", quantize_input=False, quantize_weight=False)
    q = pipeline.insert(_model(16), pipeline.PlacementConfig(spec=spec), data=x)
    typed = pipeline.type_remainder(q.qdq).model
    report = pipeline.lint(typed)
    assert report.findings == []
    assert {r.node: (r.quantized, r.kept_float) for r in report.layers} == {
        "c1": (False, "SPEC"), "head": (True, None)}
    assert "1 float by the plan: SPEC" in report.summary()
    assert {(d["consumer"], d["rule"]) for d in pipeline.inspect(typed).kept_float} == {
        ("c1", "SPEC")}  # and inspect lists it
    # a plan that left only the weight float: the float data input is a finding again
    plan = json.loads(get_metadata(typed, PLAN_KEY))
    plan["left_float"] = [d for d in plan["left_float"]
                          if not (d["consumer"] == "c1" and d["input"] == 0)]
    edited = copy.deepcopy(typed)
    set_metadata(edited, PLAN_KEY, json.dumps(plan))
    assert [(f.id, f.node) for f in pipeline.lint(edited).findings] == [("TRT-L001", "c1")]


def test_depthwise_and_grouped_sizes():
    g = G(input_shape=(1, 8, 8, 8))
    out = g.conv("dw", "x", 8, group=8)
    costs = layer_costs(g.model([out]))
    assert costs["dw"].depthwise and costs["dw"].in_channels == 1
    assert costs["dw"].macs == 8 * 8 * 8 * 1 * 9


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("out_channels_below"), "needs a condition"),
    (lambda r: r.update(out_channels_below=-3), "must be an integer in"),
    (lambda r: r.update(macs_share_below=2.0), "must be a number in"),
    (lambda r: r.update(ops_typo=["Gemm"]), "unknown key 'ops_typo'"),
])
def test_cost_rules_are_validated(edit, message):
    doc = load_yaml(bundled_rule_files()["tensorrt"])
    edit(doc["cost"][0])
    with pytest.raises(QdqError, match=message):
        parse_rules(doc)


def test_accuracy_guard_section_is_validated():
    doc = load_yaml(bundled_rule_files()["tensorrt"])
    doc["accuracy_guard"]["agreement"] = 1.5
    with pytest.raises(QdqError, match="'agreement' must be a number in"):
        parse_rules(doc)
