"""The float remainder typed FP16 (the default) or BF16: valid ONNX that onnxruntime runs,
I/O types kept, Casts only at the boundary, no Cast chain, every compute op in a reduced
type or INT8, and outputs close to the FP32 remainder's."""

import numpy as np
import onnx
import pytest
from helpers import small_classifier

from qdq_onnx import pipeline
from qdq_onnx.graph.sessions import inference_session
from qdq_onnx.precision.widen import widen

F16, F32, BF16 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16
X = np.random.default_rng(0).normal(size=(32, 3, 8, 8)).astype(np.float32)


def _qdq(model=None, data=X):
    return pipeline.insert(model or small_classifier(), data=data).qdq


def _typed(qdq, **settings):
    return pipeline.type_remainder(qdq, pipeline.PrecisionConfig(**settings), data=X)


def _casts(model):
    return [n for n in model.graph.node if n.op_type == "Cast"]


def _io_types(model):
    return [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)]


def test_default_is_fp16_with_io_kept_and_casts_only_at_the_boundary():
    qdq = _qdq()
    typed = _typed(qdq)
    m = typed.model
    onnx.checker.check_model(m, full_check=True)
    assert typed.report.high_precision == "fp16" and typed.kept_fp32 == []
    assert _io_types(m) == _io_types(qdq) == [F32, F32]
    producers = {o: n for n in m.graph.node for o in n.output}
    boundary = {i.name for i in m.graph.input} | {o.name for o in m.graph.output}
    for cast in _casts(m):  # one Cast after the input, one before the output
        assert cast.input[0] in boundary or cast.output[0] in boundary, cast.name
        assert producers.get(cast.input[0]) is None or \
            producers[cast.input[0]].op_type != "Cast"
    assert len(_casts(m)) == 2
    scales = [t for t in m.graph.initializer if t.name.endswith("_scale")]
    assert scales and all(t.data_type == F16 for t in scales)
    floats = [t for t in m.graph.initializer if t.data_type in (F16, F32)]
    assert all(t.data_type == F16 for t in floats)  # every float initializer is FP16


def test_fp16_outputs_are_close_to_the_fp32_remainder_and_lint_clean():
    qdq = _qdq()
    m = _typed(qdq).model
    want = inference_session(qdq).run(None, {"x": X})[0]
    got = inference_session(m).run(None, {"x": X})[0]
    assert got.dtype == np.float32
    sqnr = 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2))
    assert sqnr > 30, sqnr
    report = pipeline.lint(m)
    assert report.findings == [], [(f.id, f.node) for f in report.findings]
    assert report.fp32_compute_ops == 0 and report.precisions.get("fp16", 0) > 0


def test_fp32_remainder_is_flagged_by_the_strongly_typed_lint_only():
    qdq = _qdq()
    strong = pipeline.lint(qdq)
    assert {f.name for f in strong.findings} == {"fp32-compute-op"}
    assert strong.fp32_compute_ops == len(strong.findings) > 0
    assert pipeline.lint(qdq, typing="weak").findings == []


def test_io_types_follow_the_remainder_without_keep_io_types():
    m = _typed(_qdq(), keep_io_types=False).model
    onnx.checker.check_model(m, full_check=True)
    assert _io_types(m) == [F16, F16] and _casts(m) == []
    out = inference_session(m).run(None, {"x": X.astype(np.float16)})[0]
    assert out.dtype == np.float16


def test_fp32_leaves_the_model_as_it_was():
    qdq = _qdq()
    m = _typed(qdq, high_precision="fp32").model
    assert [n.SerializeToString() for n in m.graph.node] == \
        [n.SerializeToString() for n in qdq.graph.node]
    assert [t.SerializeToString() for t in m.graph.initializer] == \
        [t.SerializeToString() for t in qdq.graph.initializer]


def test_bf16_is_valid_onnx_at_opset_22_with_bf16_scales():
    typed = _typed(_qdq(), high_precision="bf16")
    m = typed.model
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version >= 22
    assert _io_types(m) == [F32, F32]
    scales = [t for t in m.graph.initializer if t.name.endswith("_scale")]
    assert scales and all(t.data_type == BF16 for t in scales)
    assert typed.kept_fp32 == []  # BF16 has FP32's range: no range guard for values


def test_widen_undoes_the_typing_exactly():
    qdq = _qdq()
    typed = _typed(qdq).model
    back = widen(typed)
    assert _casts(back) == [] and _io_types(back) == [F32, F32]
    assert [n.op_type for n in back.graph.node] == [n.op_type for n in qdq.graph.node]
    values = {t.name: onnx.numpy_helper.to_array(t) for t in typed.graph.initializer}
    for t in back.graph.initializer:
        assert t.data_type in (F32, onnx.TensorProto.INT8, onnx.TensorProto.INT64)
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t),
                                      values[t.name].astype(onnx.numpy_helper.to_array(t).dtype))


def test_calibrate_reads_a_typed_file_and_writes_it_typed(tmp_path):
    from qdq_onnx.cli.main import main

    typed = _typed(pipeline.insert(small_classifier()).qdq).model  # placeholder scales
    src = tmp_path / "q16.onnx"
    onnx.save(typed, src)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "c.onnx"
    assert main(["calibrate", str(src), "--data", str(tmp_path / "x.npy"), "-o", str(out)]) == 0
    m = onnx.load(out)
    assert _io_types(m) == [F32, F32] and len(_casts(m)) == 2
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer
              if t.name.endswith("_scale")}
    assert all(v.dtype == np.float16 for v in scales.values())
    placeholder = {t.name: onnx.numpy_helper.to_array(t) for t in typed.graph.initializer
                   if t.name.endswith("_scale")}
    assert any(not np.array_equal(scales[k], placeholder[k]) for k in scales)


@pytest.mark.parametrize("value", ["fp8", "half"])
def test_bad_high_precision_is_a_setting_error(value):
    from qdq_onnx.errors import SettingError

    with pytest.raises(SettingError, match="high_precision"):
        pipeline.PrecisionConfig(high_precision=value)
