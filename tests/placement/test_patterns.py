"""Graph-pattern rules on hand-built graphs: residual Add variants, BN, MaxPool, SE, Concat."""

import numpy as np
import pytest
from helpers import RNG, G, dq_fed, run

from qdq_onnx import quantize_model
from qdq_onnx.convert.prepare import prepare_model
from qdq_onnx.errors import QdqError
from qdq_onnx.placement.rules import load_rules, parse_rules


def _fed(q):
    return dq_fed(q.onnx)


def test_residual_identity_skip_quantized_conv_branch_float():
    g = G()
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    b = g.unary("Relu", "r1", g.bn("bn1", g.conv("c1", a, 4)))  # Conv-BN-Act branch
    y = g.binary("Add", "add", a, b)
    q = quantize_model(g.model([y]))
    fed = _fed(q)
    assert ("add", 0) in fed and ("add", 1) not in fed
    decision = [f for f in q.plan.left_float if f.consumer == "add"]
    assert decision and decision[0].rule == "TRT-R001" and "c1" in decision[0].reason


def test_residual_through_dropout_chain():
    g = G()
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    b = g.unary("Dropout", "drop", g.unary("Relu", "r1", g.bn("bn1", g.conv("c1", a, 4))))
    y = g.binary("Add", "add", b, a)
    fed = _fed(quantize_model(g.model([y])))
    assert ("add", 1) in fed and ("add", 0) not in fed


def test_residual_convtranspose_branch_unet_skip():
    """UNet-style: the encoder feature (read twice) is the skip, the ConvTranspose is fused."""
    g = G()
    enc = g.unary("Relu", "enc_relu", g.conv("enc", "x", 4))
    down = g.node("MaxPool", "pool", [enc], kernel_shape=[2, 2], strides=[2, 2])
    g.channels[down] = 4
    mid = g.unary("Relu", "mid_relu", g.conv("mid", down, 4))
    up = g.node("ConvTranspose", "up", [mid, g.w("up_w", RNG.normal(0, .3, (4, 4, 2, 2)))],
                strides=[2, 2])
    y = g.binary("Add", "add", enc, up)
    q = quantize_model(g.model([y]))
    fed = _fed(q)
    assert ("add", 0) in fed and ("add", 1) not in fed
    assert ("up", 1) in fed and [p.axis for p in q.plan.weights() if p.consumer == "up"] == [0]


def test_projection_shortcut_longer_branch_stays_float():
    g = G()
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    short = g.bn("sbn", g.conv("short", a, 4))
    main = g.unary("Relu", "m1r", g.conv("m1", a, 4))
    main = g.bn("mbn", g.conv("m2", main, 4))
    y = g.binary("Add", "add", short, main)
    fed = _fed(quantize_model(g.model([y])))
    assert ("add", 0) in fed and ("add", 1) not in fed


def test_add_without_weighted_branch_quantizes_all_and_bias_add_is_not_residual():
    g = G()
    a = g.unary("Relu", "r0", "x")
    b = g.unary("Sigmoid", "s0", "x")
    y = g.binary("Add", "add", a, b)
    z = g.node("Add", "bias", [y, g.w("bias_c", RNG.normal(size=(1, 4, 1, 1)))])
    fed = _fed(quantize_model(g.model([z])))
    assert {("add", 0), ("add", 1)} <= fed
    assert not any(n == "bias" for n, _ in fed)


def test_branch_read_twice_is_not_fusible():
    g = G()
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    b = g.conv("c1", a, 4)
    y = g.binary("Add", "add", a, b)
    other = g.unary("Relu", "other", b)  # c1's output has a second reader: no fusion
    fed = _fed(quantize_model(g.model([y, other])))
    assert {("add", 0), ("add", 1)} <= fed


def test_batchnorm_after_add_quantized_bn_after_conv_folded():
    g = G()
    a = g.bn("bn_conv", g.conv("c0", "x", 4))
    b = g.unary("Relu", "r1", g.conv("c1", a, 4))
    s = g.binary("Add", "add", a, b)
    y = g.bn("bn_post", s)
    m = g.model([y])
    prepared, notes = prepare_model(m)
    assert "bn_conv" not in {n.name for n in prepared.graph.node}
    assert any("folded" in n for n in notes)
    x = RNG.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(prepared, x)[0], run(m, x)[0], rtol=1e-4, atol=1e-5)
    fed = _fed(quantize_model(m))
    assert ("bn_post", 0) in fed


def test_maxpool_branch_mode():
    g = G()
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    p = g.node("MaxPool", "pool", [a], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.channels[p] = 4
    b = g.conv("c1", a, 4)
    y = g.binary("Add", "add", p, b)
    p2 = g.node("MaxPool", "pool2", [y], kernel_shape=[2, 2])
    g.channels[p2] = 4
    out = g.conv("c2", p2, 4)
    fed = _fed(quantize_model(g.model([out])))
    assert ("pool", 0) in fed
    assert ("pool2", 0) not in fed  # feeds a Conv, whose input is quantized already


def _se_graph(with_swish: bool):
    g = G()
    f = g.conv("c0", "x", 4)
    if with_swish:
        f = g.binary("Mul", "swish", f, g.unary("Sigmoid", "sw_sig", f))
    s = g.node("GlobalAveragePool", "gap", [f])
    g.channels[s] = 4
    s = g.unary("Relu", "se_relu", g.conv("se_reduce", s, 2, kernel=1))
    gate = g.unary("Sigmoid", "gate", g.conv("se_expand", s, 4, kernel=1))
    y = g.binary("Mul", "se_mul", f, gate)
    return g.model([y])


def test_se_multiply_both_inputs_but_not_swish():
    q = quantize_model(_se_graph(with_swish=True))
    fed = _fed(q)
    assert {("se_mul", 0), ("se_mul", 1)} <= fed
    assert not any(n == "swish" for n, _ in fed)


def _concat_model():
    g = G()
    a = g.conv("c0", "x", 4)
    b = g.conv("c1", "x", 4)
    y = g.node("Concat", "cat", [a, b], axis=1)
    g.channels[y] = 8
    return g.model([y])


@pytest.mark.parametrize("mode,expected", [("none", set()), ("all", {0, 1}),
                                           ("shared", {0, 1})])
def test_concat_modes(mode, expected):
    raw = load_rules("tensorrt")
    doc = {"schema": 1, "name": "t", "op_rules": [], "patterns": {
        "concat": {"id": "C", "name": "c", "reason": "r", "mode": mode}}}
    rules = parse_rules(doc)
    assert raw.pattern("concat").options["mode"] == "none"
    if not expected:  # this rule set has nothing else to quantize
        with pytest.raises(QdqError, match="nothing to quantize"):
            quantize_model(_concat_model(), rules=rules)
        return
    q = quantize_model(_concat_model(), rules=rules)
    fed = {i for n, i in _fed(q) if n == "cat"}
    assert fed == expected
    groups = {p.scale_group for p in q.plan.placements if p.consumer == "cat"}
    assert groups == ({"concat:cat"} if mode == "shared" else ({None} if expected else set()))
    if mode == "shared":
        scales = [t for t in q.onnx.graph.initializer if t.name.endswith("_scale")]
        assert len(scales) == 2


def test_tensor_after_a_maxpool_shares_the_scale_of_its_quantized_input():
    """ResNet v2 shortcut: the block output is quantized (BN input), goes through a MaxPool
    whose output is the quantized skip of the next Add: one scale, no re-quantization."""
    from qdq_onnx.diagnostics.lint import lint_model
    from qdq_onnx.placement.rules import load_rules

    g = G(input_shape=(1, 4, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    out = g.binary("Add", "blk", a, g.conv("c1", a, 4))  # quantized as an input of bn
    pre = g.unary("Relu", "r1", g.bn("bn", out))
    pool = g.node("MaxPool", "pool", [out], kernel_shape=[1, 1])
    g.channels[pool] = 4
    y = g.binary("Add", "add2", pool, g.conv("c2", pre, 4))
    batches = [RNG.normal(0, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    q = quantize_model(g.model([y]), calibration_data=batches)
    groups = q.plan.activation_groups()
    shared = [k for k, members in groups.items() if {m.tensor for m in members} >= {out, pool}]
    assert shared, groups.keys()
    assert lint_model(q.export(), load_rules("tensorrt")).findings == []


def test_shared_concat_scale_reaches_its_quantized_output():
    """Concat 'shared' mode: every input has one scale, so the Concat output read by a Conv
    joins that group instead of being re-quantized with its own."""
    from qdq_onnx.diagnostics.lint import lint_model
    from qdq_onnx.files.yaml_lines import load_yaml
    from qdq_onnx.placement.rules import bundled_rule_files

    doc = load_yaml(bundled_rule_files()["tensorrt"])
    doc["patterns"]["concat"]["mode"] = "shared"
    rules = parse_rules(doc)
    g = G(input_shape=(1, 4, 8, 8))
    cat = g.node("Concat", "cat", [g.unary("Relu", "r0", g.conv("c0", "x", 4)),
                                   g.unary("Relu", "r1", g.conv("c1", "x", 4))], axis=1)
    g.channels[cat] = 8
    batches = [RNG.normal(0, 1, (2, 4, 8, 8)).astype(np.float32) for _ in range(3)]
    q = quantize_model(g.model([g.conv("c2", cat, 4)]), rules=rules, calibration_data=batches)
    groups = {p.tensor: p.scale_group for p in q.plan.placements if p.kind == "activation"}
    assert groups == {"x": None, "r0_out": "concat:cat", "r1_out": "concat:cat",
                      cat: "concat:cat"}
    assert lint_model(q.export(), rules).findings == []


def test_decomposed_layer_normalisation_stays_float_below_opset_17():
    from helpers import decomposed_layernorm as decomposed

    q = quantize_model(decomposed(opset=13))
    inside = {"mean", "sub", "sq", "var", "add_eps", "sqrt", "rec", "k", "scaled", "neg",
              "shifted", "beta_add", "ln_out"}
    assert not [p for p in q.plan.placements if p.consumer in inside]
    assert {f.rule for f in q.plan.left_float if f.consumer in inside} == {"TRT-N002"}
    assert [p.consumer for p in q.plan.placements] == ["head", "head"]  # data + weight


def test_attention_products_quantized_or_left_float_by_the_live_weight_option(tmp_path):
    """MatMul of two activations: both inputs quantized by default (INT8 MHA); with
    `live_weight: skip` the product stays float while Dense MatMuls keep their Q/DQ."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(RNG.normal(0, .3, (8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"], name="proj"),
             helper.make_node("Transpose", ["q"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"], name="bmm1")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8])], [helper.make_tensor_value_info(
            "s", TensorProto.FLOAT, [1, 4, 4])], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    default = {(p.consumer, p.input) for p in quantize_model(m).plan.placements}
    assert {("bmm1", 0), ("bmm1", 1), ("proj", 0), ("proj", 1)} <= default
    from pathlib import Path

    text = Path(load_rules("tensorrt").path).read_text().replace(
        "live_weight: activation", "live_weight: skip")
    custom = tmp_path / "float-attention.yaml"
    custom.write_text(text)
    skipped = {(p.consumer, p.input)
               for p in quantize_model(m, rules=str(custom)).plan.placements}
    assert {("proj", 0), ("proj", 1)} <= skipped and not {c for c, _ in skipped} & {"bmm1"}
