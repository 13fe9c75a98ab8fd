"""Lint findings on hand-built Q/DQ graphs: every check of the rule file has a case that
it must pass and one it must flag (`CASES`, run for every `lint:` entry)."""

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import G, fp8_everywhere_rules
from onnx import helper, numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.diagnostics.lint import lint_model
from qdq_onnx.graph.qdq import qdq_pairs
from qdq_onnx.placement.rules import load_rules

RULES = load_rules("tensorrt")


def clean_float():
    """Conv(c0)->Relu->[Conv(c1)] + skip -> Add -> MaxPool -> Conv(c2), float."""
    g = G(input_shape=(1, 4, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    y = g.binary("Add", "add", a, g.conv("c1", a, 4))
    p = g.node("MaxPool", "pool", [y], kernel_shape=[2, 2])
    g.channels[p] = 4
    return g.model([g.conv("c2", p, 4)])


def clean():
    """`clean_float` with qdq-onnx's placement (FP32 remainder)."""
    return quantize_model(clean_float()).onnx


def names(model, typing="weak"):
    """The checks that fire; weak typing (no float-remainder checks) for the hand-built
    FP32 graphs of the placement checks."""
    return {f.name for f in lint_model(model, RULES, typing).findings}


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def init(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def pair_for(model, consumer, index):
    tensor = node(model, consumer).input[index]
    return next(p for p in qdq_pairs(model) if p.output == tensor)


def add_qdq(model, tensor, consumer_names, scale=0.05, axis=None, zp=0, zp_dtype=np.int8):
    """Insert a Q/DQ pair on `tensor` for the given consumers."""
    k = len(model.graph.node)
    s_name, z_name = f"lint_s{k}", f"lint_z{k}"
    s = np.asarray(scale, np.float32)
    model.graph.initializer.extend([numpy_helper.from_array(s, s_name),
                                    numpy_helper.from_array(np.full(s.shape, zp, zp_dtype),
                                                            z_name)])
    attrs = {"axis": axis} if axis is not None else {}
    q_out, dq_out = f"lint_q{k}", f"lint_dq{k}"
    nodes = [helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out],
                              name=f"lint_Q{k}", **attrs),
             helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                              name=f"lint_DQ{k}", **attrs)]
    for n in model.graph.node:
        if n.name in consumer_names:
            for i, t in enumerate(n.input):
                if t == tensor:
                    n.input[i] = dq_out
    producer = [i for i, n in enumerate(model.graph.node) if tensor in n.output]
    at = producer[0] + 1 if producer else 0
    for j, n in enumerate(nodes):
        model.graph.node.insert(at + j, n)
    return model


def test_clean_output_has_no_findings():
    report = lint_model(clean(), RULES, "weak")
    assert report.findings == []
    assert report.summary().startswith("3 of 3 weighted layers INT8, 0 fusions broken")
    shipped = lint_model(typed(clean()), RULES)  # what qdq-onnx writes: strongly typed clean
    assert shipped.findings == [] and shipped.fp32_compute_ops == 0


def typed(model):
    """The file qdq-onnx writes for `model`: its float remainder FP16."""
    from qdq_onnx import pipeline

    return pipeline.type_remainder(model).model


# Every lint check, proven both ways: name -> a function returning (a model the check must
# pass, a model it must flag). The test below runs lint on both for every entry of the
# rule file's lint section, so a check without a case, or one that stopped firing, fails.
CASES: dict = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


@case("weighted-data-not-quantized")
def _data_not_quantized():
    m = clean()
    node(m, "c2").input[0] = pair_for(m, "c2", 0).source
    assert not lint_model(m, RULES, "weak").layers[-1].quantized
    return clean(), m


@case("weight-not-quantized")
def _weight_not_quantized():
    m = clean()
    node(m, "c2").input[1] = pair_for(m, "c2", 1).source
    return clean(), m


@case("wrong-weight-axis")
def _wrong_weight_axis():
    m = clean()
    p = pair_for(m, "c1", 1)
    for n in (node(m, p.quantize), node(m, p.dequantize)):
        for a in n.attribute:
            if a.name == "axis":
                a.i = 1  # [K=4, C=4, 3, 3]: still valid ONNX, wrong for TensorRT
    return clean(), m


def _zero_point(value):
    m = clean()
    zp = node(m, pair_for(m, "c0", 0).quantize).input[2]
    init(m, zp).CopyFrom(numpy_helper.from_array(value, zp))
    return m


@case("nonzero-zero-point")
def _nonzero_zero_point():
    return clean(), _zero_point(np.int8(3))


@case("uint8-quantization")
def _uint8_zero_point():
    return _zero_point(np.int8(0)), _zero_point(np.uint8(0))


@case("per-channel-activation")
def _per_channel_activation():
    m = clean()
    p = pair_for(m, "c0", 0)
    s = node(m, p.quantize).input[1]
    init(m, s).CopyFrom(numpy_helper.from_array(np.full(4, 0.05, np.float32), s))
    zp = node(m, p.quantize).input[2]
    init(m, zp).CopyFrom(numpy_helper.from_array(np.zeros(4, np.int8), zp))
    for n in (node(m, p.quantize), node(m, p.dequantize)):
        n.attribute.append(helper.make_attribute("axis", 1))
    return clean(), m


@case("quantized-bias")
def _quantized_bias():
    m = clean()
    add_qdq(m, node(m, "c0").input[2], {"c0"}, scale=0.01)
    return clean(), m


@case("rejected-quantized-op")
def _rejected_ops():
    m = clean()
    m.graph.node.append(helper.make_node("MatMulInteger", ["a", "b"], ["c"], name="mmi"))
    return clean(), m


@case("per-channel-needs-opset-13")
def _per_channel_needs_opset_13():
    m = clean()
    m.opset_import[0].version = 12
    return clean(), m


@case("residual-weighted-branch-quantized")
def _residual_weighted_branch_quantized():
    m = clean()
    add_qdq(m, node(m, "c1").output[0], {"add"})
    return clean(), m


@case("residual-skip-not-quantized")
def _residual_skip_not_quantized():
    m = clean()
    node(m, "add").input[0] = pair_for(m, "add", 0).source
    return clean(), m


@case("qdq-on-weighted-output")
def _qdq_on_weighted_output():
    m = clean()
    add_qdq(m, node(m, "c0").output[0], {"r0"})
    return clean(), m


@case("requantization")
def _requantization():
    # The clean graph quantizes the MaxPool output (input of c2) with the placeholder scale.
    same = np.float32(6.0) / np.float32(127)
    kept = clean()
    add_qdq(kept, node(kept, "pool").input[0], {"pool"}, scale=same)  # DQ(s)-Pool-Q(s)
    m = clean()
    add_qdq(m, node(m, "pool").input[0], {"pool"}, scale=0.02)
    return kept, m


@pytest.mark.parametrize("check", sorted(RULES.lint))
def test_every_check_passes_its_clean_case_and_flags_its_broken_one(check):
    assert check in CASES, f"lint check {check!r} has no case in CASES"
    negative, positive = CASES[check]()
    typing = "strong" if check in STRONG_CHECKS else "weak"
    assert check not in names(negative, typing)
    assert check in names(positive, typing)


def test_residual_behind_layout_op_names_the_add_and_the_transpose():
    negative, m = CASES["residual-behind-layout-op"]()
    hits = [f for f in lint_model(m, RULES, "weak").findings
            if f.name == "residual-behind-layout-op"]
    assert [(f.id, f.node) for f in hits] == [("TRT-L018", "add")]
    assert "'c1'" in hits[0].message and "'to_nchw'" in hits[0].message
    assert hits[0] in lint_model(m, RULES, "weak").broken_fusions


@case("residual-behind-layout-op")
def _residual_behind_layout_op():
    g = G(input_shape=(1, 4, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    nhwc = g.node("Transpose", "to_nhwc", [g.conv("c1", a, 4)], perm=[0, 2, 3, 1])
    y = g.binary("Add", "add", a, g.node("Transpose", "to_nchw", [nhwc], perm=[0, 3, 1, 2]))
    return clean(), quantize_model(g.model([y]), keep_layout=True).onnx  # both quantized


def test_lint_cli_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(clean(), good)
    m = clean()
    m.opset_import[0].version = 12
    onnx.save(m, bad)
    assert main(["lint", str(good)]) == 0
    assert "3 of 3 weighted layers INT8" in capsys.readouterr().out
    assert main(["lint", str(bad), "--format", "json"]) == 1
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["errors"] >= 1 and data["int8_layers"] == 3


def test_qdq_on_a_weighted_output_read_by_several_ops_is_not_a_broken_fusion():
    """The conv output feeds a pool and an Add (NASNet): TensorRT materialises it anyway, so
    quantizing it breaks no fusion; read by one op it would (the test above)."""
    g = G(input_shape=(1, 4, 8, 8))
    c = g.conv("c0", "x", 4)
    pool = g.node("AveragePool", "avg", [c], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.channels[pool] = 4
    m = quantize_model(g.model([g.binary("Add", "add", pool, c)]),
                       calibration_data=np.ones((1, 4, 8, 8), np.float32)).onnx
    assert ("avg", 0) in {(n.name, i) for n in m.graph.node for i, t in enumerate(n.input)
                          if t.endswith("_dequantized")}
    assert "qdq-on-weighted-output" not in names(m)
    assert lint_model(m, RULES, "weak").findings == []


def _conv_transpose_chain(final_transpose_only: bool):
    """Conv -> Relu -> Transpose (layout) -> ...: inside the network, or only at the output."""
    g = G(input_shape=(1, 4, 8, 8))
    r = g.unary("Relu", "r", g.conv("c0", "x", 4))
    t = g.node("Transpose", "to_nhwc", [r], perm=[0, 2, 3, 1])
    if final_transpose_only:
        return g.model([t])
    back = g.node("Transpose", "to_nchw", [g.unary("Sigmoid", "s", t)], perm=[0, 3, 1, 2])
    g.channels[back] = 4
    return g.model([g.conv("c1", back, 4)])


@case("layout-transpose-after-weighted")
def _layout_transpose_after_weighted():
    at_output = quantize_model(_conv_transpose_chain(True), keep_layout=True).onnx
    inside = quantize_model(_conv_transpose_chain(False), keep_layout=True).onnx
    return at_output, inside


@case("quantized-normalization-internals")
def _quantized_normalization_internals():
    from helpers import decomposed_layernorm as decomposed

    kept = quantize_model(decomposed(opset=13)).onnx  # the pattern keeps the internals float
    assert names(kept) == set()
    m = quantize_model(decomposed(opset=13)).onnx
    mean = next(n for n in m.graph.node if n.name == "mean")
    add_qdq(m, mean.input[0], {"mean", "sub"})
    return kept, m


def _attention(seq: int = 4, head: int = 16):
    from onnx import TensorProto

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, .3, (head, head)).astype(
        np.float32), "w")
    scale = numpy_helper.from_array(np.float32(0.35), "scale")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"], name="proj"),
             helper.make_node("Transpose", ["q"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"], name="bmm1"),
             helper.make_node("Mul", ["s", "scale"], ["ss"], name="scale_mul"),
             helper.make_node("Softmax", ["ss"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "q"], ["o"], name="bmm2")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, seq, head])], [helper.make_tensor_value_info(
            "o", TensorProto.FLOAT, [1, seq, head])], [w, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@functools.lru_cache(maxsize=1)
def _attention_rules() -> str:
    """The TensorRT rules with TRT-A001 off: placement then quantizes every attention, and
    what lint says of one outside TensorRT's fused limits can be tested."""
    path = Path(tempfile.mkdtemp(prefix="qdq-onnx-rules-")) / "tensorrt-attention.yaml"
    path.write_text(Path(RULES.path).read_text().replace(
        "    id: TRT-A001\n", "    id: TRT-A001\n    enabled: false\n"))
    return str(path)


@pytest.fixture(scope="module")
def attention_quantized():
    return _attention_rules()


@pytest.mark.parametrize("seq,head,found", [(4, 16, None), (512, 64, None),
                                            (4, 8, "head size 8"), (4, 128, "head size 128"),
                                            (513, 32, "sequence 513")])
def test_mha_outside_fused_int8_limits(seq, head, found, attention_quantized):
    m = quantize_model(_attention(seq, head), rules=attention_quantized).onnx
    hits = [f.message for f in lint_model(m, RULES, "weak").findings
            if f.name == "mha-outside-fused-int8-limits"]
    if found is None:
        assert hits == []
    else:
        assert len(hits) == 1 and found in hits[0], hits
    bmm1 = node(m, "bmm1")
    bmm1.input[0] = pair_for(m, "bmm1", 0).source  # a float attention is not judged
    assert "mha-outside-fused-int8-limits" not in names(m)


@case("incomplete-mha-qdq")
def _incomplete_mha_qdq():
    whole = quantize_model(_attention()).onnx  # both products fully quantized: the INT8 MHA
    m = quantize_model(_attention()).onnx
    node(m, "bmm2").input[0] = pair_for(m, "bmm2", 0).source  # the softmax output float
    return whole, m


@case("mha-outside-fused-int8-limits")
def _mha_outside_limits():
    return (quantize_model(_attention(4, 16)).onnx,
            quantize_model(_attention(4, 8), rules=_attention_rules()).onnx)


@pytest.mark.parametrize("merge_target", ["shape", "constant"])
def test_heads_merged_after_the_second_attention_product_agree_with_placement(merge_target):
    """BMM2 -> Transpose -> Reshape -> output projection is the multi-head layout. Placement
    puts the Q/DQ after BMM2 on the projection's input, past the Transpose and Reshape (both
    precision neutral: TensorRT moves the Q back onto BMM2, the Q/DQ its INT8 fused MHA
    needs there), and lint agrees: no broken fusion. The Transpose reading BMM2 was reported
    as a layout shuffle (TRT-L014) when the Reshape's target came from its Shape."""
    from helpers import dq_fed, multi_head_attention

    m = quantize_model(multi_head_attention(merge_target=merge_target)).onnx
    fed = dq_fed(m)
    assert {("bmm1", 0), ("bmm1", 1), ("bmm2", 0), ("bmm2", 1), ("out_proj", 0)} <= fed
    assert not {("merge_heads", 0), ("merge", 0), ("merged_shape", 0)} & fed
    report = lint_model(m, RULES, "weak")
    assert report.findings == [], [(f.id, f.message) for f in report.findings]
    assert report.summary().startswith("6 of 6 weighted layers INT8, 0 fusions broken")
    assert lint_model(typed(m), RULES).findings == []  # the strongly typed file written


def test_heads_merged_after_the_second_attention_product_read_float_are_flagged():
    """Without the Q/DQ after the head layout (the output projection's input made float),
    TensorRT's INT8 MHA lacks its Q/DQ after BMM2: the Transpose reading BMM2 is reported
    (and the float projection input); a Transpose after a Dense MatMul stays a shuffle."""
    from helpers import multi_head_attention

    m = quantize_model(multi_head_attention()).onnx
    node(m, "out_proj").input[0] = pair_for(m, "out_proj", 0).source
    found = {(f.id, f.node): f.message for f in lint_model(m, RULES, "weak").findings}
    assert "Q/DQ after the second product" in found[("TRT-L014", "bmm2")]
    assert ("TRT-L001", "out_proj") in found
    from onnx import TensorProto

    r = np.random.default_rng(0)
    w = [numpy_helper.from_array(r.normal(0, .3, s).astype(np.float32), f"w{i}")
         for i, s in enumerate([(8, 8), (4, 4)])]
    dense = helper.make_graph(  # a Dense MatMul -> Transpose -> Dense, quantized after it
        [helper.make_node("MatMul", ["x", "w0"], ["h"], name="fc0"),
         helper.make_node("Transpose", ["h"], ["ht"], name="shuffle", perm=[0, 2, 1]),
         helper.make_node("MatMul", ["ht", "w1"], ["y"], name="fc1")], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 4])], w)
    q = quantize_model(helper.make_model(dense, opset_imports=[helper.make_opsetid("", 13)]))
    hits = [f.message for f in lint_model(q.onnx, RULES, "weak").findings if f.id == "TRT-L014"]
    assert hits == ["Transpose 'shuffle' reads the output of MatMul (a layout shuffle inside "
                    "the network)"]


def dense_block():
    """DenseNet's pattern: a Concat that appends new (float) features to a quantized
    tensor is not a re-quantization; its output gets its own scale."""
    g = G(input_shape=(1, 4, 8, 8))
    p = g.node("MaxPool", "pool", [g.unary("Relu", "r0", g.conv("c0", "x", 4))],
               kernel_shape=[1, 1])
    g.channels[p] = 4
    cat1 = g.node("Concat", "cat1", [p, g.conv("c1", g.unary("Relu", "r1", g.bn("bn1", p)),
                                                4)], axis=1)
    g.channels[cat1] = 8
    cat2 = g.node("Concat", "cat2", [cat1, g.conv("c2", g.unary("Relu", "r2",
                                                                  g.bn("bn2", cat1)), 4)],
                  axis=1)
    g.channels[cat2] = 12
    next(i for i in g.inits if i.name == "c2_w").CopyFrom(numpy_helper.from_array(
        RNG_W.normal(0, 3.0, (4, 8, 3, 3)).astype(np.float32), "c2_w"))  # new maxima
    return g.model([g.conv("c3", g.bn("bn3", cat2), 4)])


RNG_W = np.random.default_rng(7)


def test_concat_of_new_features_is_not_requantization():
    x = np.random.default_rng(0).random((8, 4, 8, 8), dtype=np.float32)
    m = quantize_model(dense_block(), calibration_data=x).onnx
    scale = {p.output: numpy_helper.to_array(init(m, p.scale)) for p in qdq_pairs(m)}
    first, last = node(m, "pool").input[0], node(m, "bn3").input[0]
    assert scale[first] != scale[last]  # the Concat chain reaches a different range
    assert lint_model(m, RULES, "weak").findings == []


def test_concat_of_quantized_inputs_with_another_scale_is_requantization():
    m = quantize_model(dense_block()).onnx
    out = next(p for p in qdq_pairs(m) if p.output == node(m, "bn3").input[0])
    same = numpy_helper.to_array(init(m, out.scale))
    for scale, found in ((same, False), (same * 2, True)):
        m = quantize_model(dense_block()).onnx
        cat2 = node(m, "cat2")
        add_qdq(m, cat2.input[0], {"cat2"}, scale=same)
        add_qdq(m, cat2.input[1], {"cat2"}, scale=scale)  # every cat2 input dequantized
        assert ("requantization" in names(m)) == found


# -- strongly typed checks (TensorRT 11) ------------------------------------------------------
STRONG_CHECKS = {"fp32-compute-op", "qdq-type-mismatch", "cast-chain"}


@case("fp32-compute-op")
def _fp32_compute_op():
    return typed(clean()), clean()  # the FP32 remainder: every float op runs FP32


def test_fp32_ops_the_range_guard_recorded_are_listed_not_flagged():
    from helpers import fp16_overflow_model

    from qdq_onnx import pipeline

    x = np.random.default_rng(3).normal(size=(64, 16)).astype(np.float32)
    t = pipeline.type_remainder(pipeline.insert(fp16_overflow_model(), data=x).qdq, data=x)
    report = lint_model(t.model, RULES)
    assert report.findings == []
    assert [(node, rule) for node, _, rule, _ in report.kept_fp32] == \
        [("square", "TRT-H001"), ("root", "TRT-H001")]
    assert report.fp32_compute_ops == 2 and "2 FP32 by the range guard" in report.summary()


@case("qdq-type-mismatch")
def _qdq_type_mismatch():
    m = typed(clean())
    pair = pair_for(m, "c2", 0)
    dq = node(m, pair.dequantize)
    wide = numpy_helper.from_array(numpy_helper.to_array(init(m, pair.scale)).astype(
        np.float32), "wide_scale")
    m.graph.initializer.append(wide)
    dq.input[1] = "wide_scale"  # the DQ outputs FP32, its Q reads an FP16 scale
    cast = helper.make_node("Cast", [dq.output[0]], ["c2_in16"], name="retype",
                            to=onnx.TensorProto.FLOAT16)
    m.graph.node.insert(list(m.graph.node).index(dq) + 1, cast)
    node(m, "c2").input[0] = "c2_in16"
    hits = [f.message for f in lint_model(m, RULES).findings if f.name == "qdq-type-mismatch"]
    assert any("scale is FLOAT16 and its DequantizeLinear scale FLOAT" in h for h in hits)
    assert any("a Cast (retype) retypes it" in h for h in hits)
    return typed(clean()), m


@case("cast-chain")
def _cast_chain():
    m = typed(clean())
    first = next(n for n in m.graph.node if n.op_type == "Cast")
    second = helper.make_node("Cast", [first.output[0]], ["again"], name="again",
                              to=onnx.TensorProto.FLOAT16)
    for n in m.graph.node:
        for i, t in enumerate(n.input):
            if t == first.output[0]:
                n.input[i] = "again"
    m.graph.node.insert(list(m.graph.node).index(first) + 1, second)
    return typed(clean()), m


def test_lint_typing_option_and_its_default(tmp_path, capsys):
    src = tmp_path / "fp32.onnx"
    onnx.save(clean(), src)
    assert main(["lint", str(src)]) == 0
    strong = capsys.readouterr().out
    assert "TRT-L019 fp32-compute-op" in strong
    assert main(["lint", str(src), "--typing", "weak"]) == 0
    assert "TRT-L019" not in capsys.readouterr().out


# -- FP8 checks ------------------------------------------------------------------------------
def _retyped_to_fp8(model, pairs):
    """`model` with the zero points of `pairs` turned into FP8 zeros (another tool's FP8)."""
    for p in pairs:
        for n in (node(model, p.quantize), node(model, p.dequantize)):
            zp = init(model, n.input[2])
            zp.CopyFrom(helper.make_tensor(zp.name, onnx.TensorProto.FLOAT8E4M3FN, zp.dims,
                                           [0.0] * int(np.prod(zp.dims or [1]))))
    return model


@case("fp8-per-channel-weight")
def _fp8_per_channel_weight():
    fp8 = quantize_model(clean_float(), dtype="fp8",  # qdq-onnx's FP8: one weight scale
                         rules=fp8_everywhere_rules())  # (4 channels: no INT8 fallback)
    assert all(p.axis is None for p in fp8.plan.weights())
    per_tensor = fp8.onnx
    m = clean()  # INT8 per-channel weights, retyped to FP8
    _retyped_to_fp8(m, [p for p in qdq_pairs(m) if p.is_weight])
    return per_tensor, m


@case("mixed-precision-attention")
def _mixed_precision_attention():
    fp8 = quantize_model(_attention(4, 16), dtype="fp8").onnx
    m = quantize_model(_attention(4, 16)).onnx
    _retyped_to_fp8(m, [pair_for(m, "bmm2", 0)])  # the softmax output in FP8, the rest INT8
    return fp8, m


@case("fp8-outside-fp8-policy")
def _fp8_outside_fp8_policy():
    g = G(input_shape=(1, 16, 8, 8))
    model = g.model([g.conv("dw", g.unary("Relu", "r", g.conv("c0", "x", 16)), 16, group=16)])
    placed = quantize_model(model, dtype="fp8").onnx  # TRT-F001: the depthwise Conv INT8
    forced = quantize_model(model, dtype="fp8", rules=fp8_everywhere_rules()).onnx
    return placed, forced


@pytest.mark.parametrize("seq,head,found", [(3072, 64, None), (4, 128, "head size 128"),
                                            (3073, 32, "sequence 3073")])
def test_fp8_attention_has_the_fp8_fused_limits(seq, head, found, attention_quantized):
    m = quantize_model(_attention(seq, head), dtype="fp8", rules=attention_quantized).onnx
    hits = [f.message for f in lint_model(m, RULES, "weak").findings
            if f.name == "mha-outside-fused-int8-limits"]
    assert hits == [] if found is None else (len(hits) == 1 and found in hits[0]
                                             and "FP8 products" in hits[0]), hits


@pytest.mark.parametrize("head,fused", [(15, False), (32, True)])
def test_placement_and_lint_agree_on_attention_outside_the_fused_limits(head, fused,
                                                                       attention_quantized):
    """TRT-A001: an attention whose head size TensorRT's fused INT8 MHA does not take (15,
    as the PP-OCRv4 recogniser's) keeps both products float, recorded with the rule's
    reason, and lints clean; inside the limits both products are quantized. With the
    pattern off, the quantized attention is what TRT-L017 reports, by the same limits."""
    from helpers import dq_fed, multi_head_attention

    products = {("bmm1", 0), ("bmm1", 1), ("bmm2", 0), ("bmm2", 1)}
    q = quantize_model(multi_head_attention(head=head))
    fed = dq_fed(q.onnx)
    assert (products <= fed) if fused else not (products & fed)
    assert ("out_proj", 0) in fed  # the projections stay INT8 either way
    left = {(d.consumer, d.input) for d in q.plan.left_float if d.rule == "TRT-A001"}
    assert left == (set() if fused else products)
    assert lint_model(typed(q.onnx), RULES).findings == []
    if fused:
        return
    forced = quantize_model(multi_head_attention(head=head), rules=attention_quantized).onnx
    assert products <= dq_fed(forced)
    found = [f.id for f in lint_model(typed(forced), RULES).findings]
    assert found == ["TRT-L017"]
