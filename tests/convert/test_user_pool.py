"""The conformance pool of what users bring (tests/user_pool.py): each model converts, matches
Keras in FP32, keeps integer inputs integer, and lints clean once calibrated, with no Q/DQ on
an integer tensor."""

import numpy as np
import pytest
from onnx import numpy_helper

pytest.importorskip("tensorflow")
pytest.importorskip("keras_hub")
pytest.importorskip("tf_keras")

from user_pool import BY_NAME, POOL, keras_outputs  # noqa: E402

from qdq_onnx import pipeline  # noqa: E402
from qdq_onnx.data.feeds import as_named, match_inputs  # noqa: E402
from qdq_onnx.errors import QdqError  # noqa: E402
from qdq_onnx.graph.element_types import non_float_tensors  # noqa: E402
from qdq_onnx.graph.sessions import inference_session  # noqa: E402
from qdq_onnx.pipeline.running import run_model


@pytest.fixture(scope="module")
def converted():
    cache = {}

    def get(name):
        if name not in cache:
            entry = BY_NAME[name]
            model = entry.build()
            cache[name] = (entry, model, pipeline.convert(model))
        return cache[name]

    return get


@pytest.mark.parametrize("name", [p.name for p in POOL])
def test_converts_and_matches_keras(converted, name):
    entry, model, onx = converted(name)
    x = entry.inputs(4)
    feeds = match_inputs(as_named(x), onx)
    got = inference_session(onx).run(None, feeds)
    want = keras_outputs(model, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-5 * max(1.0, float(np.abs(w).max()))


@pytest.mark.parametrize("name", [p.name for p in POOL])
def test_calibrated_output_lints_clean_with_no_qdq_on_integers(converted, name):
    entry, _, onx = converted(name)
    q = pipeline.insert(onx, data=entry.inputs(16))
    typed = pipeline.type_remainder(q.qdq, data=entry.inputs(16)).model  # the file written
    report = pipeline.lint(typed)
    assert report.findings == [], [(f.id, f.node) for f in report.findings[:4]]
    integers = non_float_tensors(onx.graph)
    assert not [p.tensor for p in q.plan.placements if p.tensor in integers]
    quantized = {n.input[0] for n in q.qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert not quantized & integers


@pytest.mark.parametrize("name", [p.name for p in POOL])
def test_the_fp16_remainder_runs_and_stays_close_to_the_fp32_one(converted, name):
    """Valid ONNX onnxruntime runs, integer inputs still integer, every output within 30 dB
    of the FP32-remainder Q/DQ model (control flow kept FP32 with its subgraph)."""
    import onnx

    entry, _, onx = converted(name)
    x = entry.inputs(8)
    q = pipeline.insert(onx, data=x)
    typed = pipeline.type_remainder(q.qdq, data=x).model
    onnx.checker.check_model(typed, full_check=True)
    assert [i.type.tensor_type.elem_type for i in typed.graph.input] == \
        [i.type.tensor_type.elem_type for i in onx.graph.input]
    feeds = match_inputs(as_named(x), onx)
    want = inference_session(q.qdq).run(None, feeds)
    got = inference_session(typed).run(None, feeds)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        noise = np.sum((w.astype(np.float64) - g) ** 2)
        assert 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / max(noise, 1e-30)) > 30


def test_dict_integer_inputs_stay_integer_and_outputs_keep_their_keys(converted):
    _, model, onx = converted("bert")
    assert {i.name: i.type.tensor_type.elem_type for i in onx.graph.input} == {
        "padding_mask": 6, "segment_ids": 6, "token_ids": 6}  # int32, as Keras declares
    assert [o.name for o in onx.graph.output] == ["pooled_output", "sequence_output"]
    q = pipeline.insert(onx, data=BY_NAME["bert"].inputs(8))
    # the embedding tables are read by Gather in float and never quantized
    gathers = [n for n in q.qdq.graph.node if n.op_type == "Gather"]
    tables = {n.input[0] for n in gathers} & {t.name for t in q.qdq.graph.initializer}
    assert tables and not tables & {n.input[0] for n in q.qdq.graph.node
                                    if n.op_type == "QuantizeLinear"}
    non_float = [f for f in q.plan.left_float if f.rule == "TRT-N003"]
    assert non_float  # the integer Adds of position ids were considered and kept float


def test_list_data_is_matched_to_the_inputs_in_keras_order(converted):
    entry, model, onx = converted("two_inputs")
    images, meta = entry.inputs(6)
    q = pipeline.insert(onx, data=[images, meta])
    by_name = pipeline.insert(onx, data={"image": images, "meta": meta})
    scales = {t.name: numpy_helper.to_array(t) for t in q.qdq.graph.initializer}
    for t in by_name.qdq.graph.initializer:
        np.testing.assert_array_equal(scales[t.name], numpy_helper.to_array(t))
    got = run_model(onx, (images, meta))
    np.testing.assert_allclose(got, keras_outputs(model, [images, meta])[0], atol=1e-5)
    with pytest.raises(QdqError, match="3 arrays given by position.*2 input"):
        pipeline.insert(onx, data=[images, meta, meta])


def test_a_gru_converts_as_a_loop_that_stays_float(converted):
    _, _, onx = converted("gru_text")
    q = pipeline.insert(onx, data=BY_NAME["gru_text"].inputs(8))
    loops = [n for n in q.qdq.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1 and not [a for a in loops[0].attribute if a.name == "body"
                                    for n in a.g.node if n.op_type == "QuantizeLinear"]
    assert any("control-flow ops (Loop)" in note for note in q.notes)


def test_recurrent_layers_stay_float(converted):
    _, _, onx = converted("lstm_text")
    q = pipeline.insert(onx, data=BY_NAME["lstm_text"].inputs(8))
    lstm = [n for n in q.qdq.graph.node if n.op_type == "LSTM"]
    assert len(lstm) == 1
    quantized = {n.output[0] for n in q.qdq.graph.node if n.op_type == "DequantizeLinear"}
    assert not set(lstm[0].input) & quantized
    assert onx.graph.input[0].type.tensor_type.elem_type == 6  # int32 token ids


def test_keras2_model_flatten_transpose_is_folded_into_the_dense(converted):
    _, _, onx = converted("tf_keras_cnn")
    assert not [n for n in onx.graph.node if n.op_type == "Transpose"
                and n.input[0] not in {i.name for i in onx.graph.input}]
