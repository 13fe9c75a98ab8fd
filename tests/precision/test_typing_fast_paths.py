"""The fast paths of typing a remainder give exactly what the plain computation gives:
the integer FP16 rounding, the pre-filtered weight matching, the in-place opset upgrade
and typing a model the caller gives up (`copy=False`)."""

from __future__ import annotations

import helpers
import numpy as np
import onnx
import pytest

from qdq_onnx import pipeline
from qdq_onnx.graph.opset import upgrade_opset
from qdq_onnx.precision import qdq_values
from qdq_onnx.types.float_type import FP16


@pytest.mark.parametrize("block", [1 << 18, 700], ids=["one-block", "blocks-of-2-rows"])
@pytest.mark.parametrize("zero_point", [False, True], ids=["symmetric", "zero-point"])
def test_prefiltered_matching_equals_testing_every_element(zero_point, block, monkeypatch):
    """`_match` tests in full only the elements that can miss (a weight's candidates from
    all its blocks at once); on weights with every hard case (near rounding boundaries,
    saturation, FP16 subnormals, overflow, NaN) it gives the values `_match_all` gives
    testing everything."""
    monkeypatch.setattr(qdq_values, "_BLOCK", block)
    rng = np.random.default_rng(3)
    w = (rng.normal(size=(16, 300)) * rng.uniform(1e-4, 3, (16, 1))).astype(np.float32)
    s32 = (np.abs(w).max(1, keepdims=True) / 127).astype(np.float32)
    t = rng.integers(-127, 128, w.shape) + 0.5  # exactly on boundaries, and just beside
    w[:, :40] = (t[:, :40] * s32).astype(np.float32)
    w[:, 40:60] = np.nextafter((t[:, 40:60] * s32).astype(np.float32), np.float32(np.inf))
    w[:, 60:70] *= 3  # saturates
    w[0, :5] = [1e-6, -3e-7, 6e-8, 0.0, -0.0]  # FP16 subnormals and zeros
    w[1, :3] = [7e4, -1e5, np.nan]  # overflows FP16, and a NaN
    zp = rng.integers(-5, 6, (16, 1)).astype(np.float32) if zero_point else \
        np.zeros((), np.float32)
    s = qdq_values.reduced_scale(s32, FP16, 127.0)
    with np.errstate(all="ignore"):
        full = qdq_values._match_all(w, s32, s, zp, (-128, 127), FP16)
        fast = qdq_values._match(w, s32, s, zp, (-128, 127), FP16)
        want = np.clip(np.rint(w / s32) + zp, -128, 127)
        got = np.clip(np.rint(full.astype(np.float32) / s + zp), -128, 127)
    np.testing.assert_array_equal(fast.view(np.uint16),
                                  full.astype(np.float16).view(np.uint16))
    finite = np.isfinite(w) & (np.abs(w) < 6e4)
    assert (got == want)[finite].mean() > 0.999  # what matching is for


def _qdq_model() -> onnx.ModelProto:
    return pipeline.insert(helpers.small_classifier()).qdq


def test_in_place_opset_upgrade_equals_the_copying_one():
    model = helpers.small_classifier()
    model.opset_import[0].version = 13
    copied = upgrade_opset(model, 19)
    before = model.SerializeToString()
    assert model.SerializeToString() == before  # the copying form leaves it alone
    moved = upgrade_opset(model, 19, in_place=True)
    assert moved is model
    assert moved.SerializeToString() == copied.SerializeToString()


def test_typing_a_model_given_up_equals_typing_a_copy():
    q = _qdq_model()
    q.opset_import[0].version = 13  # the typing upgrades it to 19
    before = q.SerializeToString()
    kept = pipeline.type_remainder(q)
    assert q.SerializeToString() == before  # copy=True: the input is untouched
    given = pipeline.type_remainder(q, copy=False)
    assert given.model.SerializeToString() == kept.model.SerializeToString()
    assert given.model.opset_import[0].version == 19
