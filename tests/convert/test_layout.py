"""The layout pass of prepare: Transposes a converter left around weighted ops are pushed to
the graph's edges by onnxruntime's transpose optimizer, and kept only where it cannot help."""

import numpy as np
import onnx
import pytest
from helpers import G, run

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.convert import layout
from qdq_onnx.convert.prepare import prepare_model
from qdq_onnx.diagnostics.lint import lint_model
from qdq_onnx.placement.rules import load_rules


def nhwc_model():
    """What tf2onnx leaves when its transpose optimizer fails: every Conv wrapped in
    NHWC->NCHW / NCHW->NHWC Transposes, with the activations, the per-channel BatchNorm
    Mul and a residual Add running in NHWC between them."""
    g = G(input_shape=(1, 8, 8, 4))

    def conv(name, x):
        nchw = g.node("Transpose", f"{name}_in", [x], perm=[0, 3, 1, 2])
        g.channels[nchw] = 4
        return g.node("Transpose", f"{name}_out", [g.conv(name, nchw, 4)], perm=[0, 2, 3, 1])

    a = g.unary("Relu", "r0", conv("c0", "x"))
    bn = g.node("Mul", "bn_mul", [conv("c1", a), g.w("bn_scale", np.linspace(.5, 1.5, 4))])
    y = g.binary("Add", "add", a, g.unary("Relu", "r1", bn))
    return g.model([conv("c2", y)])


def transposes(model):
    return [n for n in model.graph.node if n.op_type == "Transpose"]


def test_layout_transposes_move_to_the_edges_and_results_are_unchanged():
    m = nhwc_model()
    before = m.SerializeToString()
    prepared, notes = prepare_model(m)
    assert m.SerializeToString() == before  # the input is not modified
    assert len(transposes(m)) == 6 and len(transposes(prepared)) == 2
    assert any(n.startswith("removed 4 layout Transpose(s)") for n in notes), notes
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float32)
    assert np.abs(run(prepared, x)[0] - run(m, x)[0]).max() < 1e-5
    assert {n.domain for n in prepared.graph.node} == {""}
    assert prepared.opset_import == m.opset_import and prepared.ir_version == m.ir_version


def test_quantized_output_fuses_and_lints_clean_only_after_the_pass():
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype(np.float32)
    rules = load_rules("tensorrt")
    pushed = quantize_model(nhwc_model(), calibration_data=x)
    assert lint_model(pushed.export(), rules).findings == []
    add = next(p for p in pushed.plan.placements if p.consumer == "add")
    assert add.rule == "TRT-R001" and len([p for p in pushed.plan.placements
                                           if p.consumer == "add"]) == 1
    kept = quantize_model(nhwc_model(), calibration_data=x, keep_layout=True)
    found = {f.id for f in lint_model(kept.export(), rules).findings}
    assert {"TRT-L014", "TRT-L018"} <= found


def test_a_failing_optimizer_leaves_the_model_as_it_was(monkeypatch):
    monkeypatch.setattr(layout, "_run_transpose_optimizer", lambda model: None)
    m = nhwc_model()
    prepared, notes = prepare_model(m)
    assert len(transposes(prepared)) == 6
    assert any("kept: onnxruntime's transpose optimizer failed" in n for n in notes), notes


def test_an_optimizer_that_changes_more_than_layout_is_rejected(monkeypatch):
    real = layout._run_transpose_optimizer

    def fused(model):
        out = real(model)
        out.graph.node.remove(next(n for n in out.graph.node if n.op_type == "Relu"))
        return out

    monkeypatch.setattr(layout, "_run_transpose_optimizer", fused)
    prepared, notes = prepare_model(nhwc_model())
    assert len(transposes(prepared)) == 6
    assert any("changed more than Transposes" in n for n in notes), notes


def test_a_model_without_layout_transposes_is_untouched():
    g = G()
    m = g.model([g.unary("Relu", "r", g.conv("c", "x", 4))])
    assert layout.push_transposes(m) == (m, None)


@pytest.mark.parametrize("flag,count", [([], 2), (["--keep-layout"], 6)])
def test_cli_keep_layout(tmp_path, flag, count):
    src, out = tmp_path / "nhwc.onnx", tmp_path / "q.onnx"
    onnx.save(nhwc_model(), src)
    assert main(["insert", str(src), "-o", str(out), *flag]) == 0
    assert len(transposes(onnx.load(out))) == count


@pytest.mark.parametrize("op,trans_b", [("MatMul", 0), ("Gemm", 0), ("Gemm", 1)])
def test_transpose_before_a_flatten_is_folded_into_the_dense_weights(op, trans_b):
    """Conv (NCHW) -> Transpose to NHWC -> Flatten's Reshape -> Dense: the weight rows are
    permuted to (c, h, w) order and the Transpose goes, with the same outputs."""
    from onnx import TensorProto, helper, numpy_helper

    from qdq_onnx.convert.prepare import prepare_model
    from qdq_onnx.graph.sessions import inference_session

    rng = np.random.default_rng(0)
    c, h, w, out = 3, 4, 5, 6
    wt = rng.normal(size=(c * h * w, out)).astype(np.float32)
    dense = numpy_helper.from_array(wt.T.copy() if trans_b else wt, "fc_w")
    nodes = [helper.make_node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1], name="t"),
             helper.make_node("Reshape", ["nhwc", "shape"], ["flat"], name="flatten"),
             helper.make_node(op, ["flat", "fc_w"], ["y"], name="fc",
                              **({"transB": trans_b} if op == "Gemm" else {}))]
    g = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, out])],
        [dense, numpy_helper.from_array(np.array([-1, c * h * w], np.int64), "shape")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    prepared, notes = prepare_model(model)
    assert "Transpose" not in {n.op_type for n in prepared.graph.node}
    assert any("before a Flatten" in n for n in notes)
    x = rng.normal(size=(2, c, h, w)).astype(np.float32)
    want = inference_session(model).run(None, {"x": x})[0]
    got = inference_session(prepared).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(model.graph.node) == 3  # the input model is untouched
