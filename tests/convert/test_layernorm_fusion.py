"""Decomposed layer normalisation (tf2onnx's moments form) fused back into one op."""

import numpy as np
import onnx
from helpers import LN_CHANNELS as C
from helpers import decomposed_layernorm as decomposed

from qdq_onnx.convert.layernorm import fuse_layernorm
from qdq_onnx.convert.prepare import prepare_model
from qdq_onnx.graph.sessions import inference_session

RNG = np.random.default_rng(5)


def test_moments_fuse_into_one_layernormalization_that_computes_the_same():
    m = decomposed()
    fused = onnx.ModelProto()
    fused.CopyFrom(m)
    removed = fuse_layernorm(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert ops == ["LayerNormalization", "MatMul"]
    assert len(removed) == 12 and set(removed.values()) == {"ln_out"}
    onnx.checker.check_model(fused, full_check=True)
    x = RNG.normal(0, 2, (3, 7, C)).astype(np.float32)
    a = inference_session(m).run(None, {"x": x})[0]
    b = inference_session(fused).run(None, {"x": x})[0]
    assert np.abs(a - b).max() < 1e-5


def test_without_beta_and_through_prepare_only_from_opset_17():
    prepared, notes = prepare_model(decomposed(beta=False))
    assert [n.op_type for n in prepared.graph.node] == ["LayerNormalization", "MatMul"]
    assert any("LayerNormalization" in note for note in notes)
    old, _ = prepare_model(decomposed(opset=13))  # LayerNormalization needs opset 17
    assert "LayerNormalization" not in {n.op_type for n in old.graph.node}


def test_near_miss_is_left_alone():
    m = decomposed(near_miss=True)
    assert fuse_layernorm(m) == {}
    assert "LayerNormalization" not in {n.op_type for n in m.graph.node}
