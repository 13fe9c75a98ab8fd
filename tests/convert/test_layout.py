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
    assert lint_model(pushed.onnx, rules).findings == []
    add = next(p for p in pushed.plan.placements if p.consumer == "add")
    assert add.rule == "TRT-R001" and len([p for p in pushed.plan.placements
                                           if p.consumer == "add"]) == 1
    kept = quantize_model(nhwc_model(), calibration_data=x, keep_layout=True)
    found = {f.id for f in lint_model(kept.onnx, rules).findings}
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
