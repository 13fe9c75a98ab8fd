"""Placement asserted on plan snapshots, one per rule id: `plan_placement` on prepared
models that exercise every placement rule of the bundled TensorRT file, each decision
(a pair placed, an input left float) filed under the rule that made it. A change to the
planner or the rule file shows up as the snapshot of the rules it changed.

    QDQ_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/placement/test_rule_snapshots.py

rewrites tests/placement/snapshots/ after a deliberate change (review the diff)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import G, decomposed_layernorm, fp8_cnn, mlp, multi_head_attention, small_classifier
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import pipeline
from qdq_onnx.convert.prepare import prepare_model
from qdq_onnx.placement.rules import load_rules

SNAPSHOTS = Path(__file__).parent / "snapshots"
# Rule ids of the bundled file that no plan records, each with where it is tested instead.
NOT_PLACEMENT = {
    "TRT-G001": "the accuracy guard moves layers after calibration (tests/quantize)",
    "TRT-H": "the range guard of the typing stage (tests/precision/test_range_guard.py)",
    "TRT-L": "lint checks (tests/diagnostics/test_lint.py)",
}


def _residual() -> onnx.ModelProto:
    """conv-bn-relu-conv-bn + identity skip (TRT-R001), a MaxPool feeding the next Add
    (TRT-M001), a BatchNorm after an Add (TRT-B001), a Concat (TRT-C001)."""
    g = G("residual", input_shape=(1, 8, 8, 8))
    h = g.unary("Relu", "r0", g.bn("bn0", g.conv("c0", "x", 8)))
    h = g.bn("bn1", g.conv("c1", h, 8))
    y = g.unary("Relu", "r1", g.binary("Add", "add0", h, "x"))
    p = g.node("MaxPool", "pool", [y], kernel_shape=[3, 3], pads=[1] * 4)
    g.channels[p] = 8
    z = g.binary("Add", "add1", g.conv("c2", p, 8), p)
    z = g.bn("bn_after_add", z)
    cat = g.node("Concat", "cat", [g.conv("c3", z, 8), g.conv("c4", z, 8)], axis=1)
    g.channels[cat] = 16
    return g.model([cat])


def _squeeze_excite() -> onnx.ModelProto:
    g = G("se")
    f = g.conv("c0", "x", 4)
    s = g.node("GlobalAveragePool", "gap", [f])
    g.channels[s] = 4
    s = g.unary("Relu", "se_relu", g.conv("se_reduce", s, 2, kernel=1))
    gate = g.unary("Sigmoid", "gate", g.conv("se_expand", s, 4, kernel=1))
    return g.model([g.binary("Mul", "se_mul", f, gate)])


def _transposed_and_gemm() -> onnx.ModelProto:
    """ConvTranspose (TRT-W002), AveragePool (TRT-P001), Gemm with transB (TRT-W003)."""
    g = G("convt_gemm", input_shape=(1, 4, 8, 8))
    up = g.convt("up", g.conv("c0", "x", 16), 16)
    pooled = g.node("AveragePool", "avg", [up], kernel_shape=[8, 8])
    g.channels[pooled] = 16
    flat = g.node("Flatten", "flat", [pooled], axis=1)
    g.w("fc_w", np.random.default_rng(0).normal(0, 0.2, (32, 16 * 1 * 1 * 1)))
    return g.model([g.node("Gemm", "fc", [flat, "fc_w"], transB=1)])


def _embedding() -> onnx.ModelProto:
    """int64 token ids -> Gather of a table -> MatMul: no Q/DQ on integers (TRT-N003)."""
    r = np.random.default_rng(1)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
             helper.make_node("MatMul", ["emb", "proj"], ["y"], name="proj_mm")]
    graph = helper.make_graph(
        nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 32])],
        [numpy_helper.from_array(r.normal(0, 1, (50, 32)).astype(np.float32), "table"),
         numpy_helper.from_array(r.normal(0, 0.2, (32, 32)).astype(np.float32), "proj")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _large_kernel() -> onnx.ModelProto:
    g = G("large_kernel", input_shape=(1, 16, 16, 16))
    return g.model([g.conv("c7", g.conv("c3", "x", 16), 16, kernel=7)])


# (name, model builder, placement settings)
POOL = [
    ("small_classifier", small_classifier, {}),
    ("mlp", mlp, {}),
    ("residual", _residual, {}),
    ("squeeze_excite", _squeeze_excite, {}),
    ("convt_gemm", _transposed_and_gemm, {}),
    ("embedding", _embedding, {}),
    ("layernorm_opset13", lambda: decomposed_layernorm(opset=13), {}),
    ("attention_fused", multi_head_attention, {}),
    ("attention_large_head", lambda: multi_head_attention(seq=16, heads=1, head=80), {}),
    ("fp8_cnn", lambda: fp8_cnn(depthwise=True), {"scheme": "fp8"}),
    ("fp8_large_kernel", _large_kernel, {"scheme": "fp8"}),
    ("fp8_mlp", lambda: mlp(widths=(32, 32)), {"scheme": "fp8"}),
]


def _entries() -> dict[str, list[str]]:
    by_rule: dict[str, list[str]] = defaultdict(list)
    for name, _, plan in _plans():
        for p in plan.placements:
            axis = "" if p.axis is None else f" axis {p.axis}"
            for rule in p.rule.split(","):  # "TRT-W001,TRT-F005": the op rule, the FP8 one
                by_rule[rule].append(f"{name}: {p.consumer}[{p.input}] {p.kind} {p.scheme}"
                                     f"{axis}")
        for f in plan.left_float:
            for rule in f.rule.split(","):
                by_rule[rule].append(f"{name}: {f.consumer}[{f.input}] left float")
    return {rule: sorted(lines) for rule, lines in by_rule.items()}


def _plans() -> list[tuple[str, onnx.ModelProto, pipeline.PlacementPlan]]:
    out = []
    for name, build, settings in POOL:
        prepared, _ = prepare_model(build(), copy=True, layout=True)
        out.append((name, prepared,
                    pipeline.plan_placement(prepared, pipeline.PlacementConfig(**settings))))
    return out


@pytest.fixture(scope="module")
def entries() -> dict[str, list[str]]:
    return _entries()


def test_every_placement_rule_of_the_bundled_file_has_a_snapshot(entries):
    rules = load_rules("tensorrt")
    ids = {r.id for r in rules.op_rules} | {r.id for r in rules.never} | \
        {p.id for p in rules.patterns.values()} | {c.id for c in rules.cost} | \
        {f.id for f in rules.fp8}
    ids = {i for i in ids if not any(i.startswith(p) for p in NOT_PLACEMENT)}
    assert sorted(ids - set(entries) - set(NEGATIVE)) == []


def _ops(rules, rule_id):
    never = {r.id: r for r in rules.never}
    return set(never[rule_id].ops)


# Rules that forbid a pair: nothing to file under them, so each is checked as "no plan of
# the pool places a pair it forbids", on a pool that has such inputs.
NEGATIVE = {
    "TRT-N001": lambda rules, model, p: _op_of(model, p.consumer) in _ops(rules, "TRT-N001"),
    "TRT-N003": lambda rules, model, p: p.tensor in _integer_tensors(model),
    "TRT-C001": lambda rules, model, p: _op_of(model, p.consumer) == "Concat",
}


def _op_of(model: onnx.ModelProto, node: str) -> str | None:
    return next((n.op_type for n in model.graph.node if n.name == node), None)


def _integer_tensors(model: onnx.ModelProto) -> set[str]:
    from qdq_onnx.graph.element_types import element_types

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    return {t for t, e in element_types(model).items() if e not in floats}


def test_no_plan_places_a_pair_a_never_rule_forbids():
    rules = load_rules("tensorrt")
    plans = _plans()
    for rule, forbids in NEGATIVE.items():
        reach = {"TRT-N001": lambda m: any(n.op_type in _ops(rules, "TRT-N001")
                                           for n in m.graph.node),
                 "TRT-N003": lambda m: bool(_integer_tensors(m)),
                 "TRT-C001": lambda m: any(n.op_type == "Concat" for n in m.graph.node)}[rule]
        assert any(reach(m) for _, m, _ in plans), f"no model of the pool tests {rule}"
        bad = [f"{name}: {p.consumer}[{p.input}]" for name, m, plan in plans
               for p in plan.placements if forbids(rules, m, p)]
        assert bad == [], rule


def test_plans_match_the_snapshot_of_each_rule(entries):
    if os.environ.get("QDQ_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(exist_ok=True)
        for old in SNAPSHOTS.glob("*.json"):
            old.unlink()
        for rule, lines in entries.items():
            (SNAPSHOTS / f"{rule}.json").write_text(json.dumps(lines, indent=1) + "\n")
    stored = {p.stem: json.loads(p.read_text()) for p in SNAPSHOTS.glob("*.json")}
    changed = sorted(r for r in set(stored) | set(entries) if stored.get(r) != entries.get(r))
    assert changed == [], f"decisions changed for {changed} (see the module docstring)"
