"""The fast paths of typing a remainder give exactly what the plain computation gives:
the integer FP16 rounding, the pre-filtered weight matching, the in-place opset upgrade
and typing a model the caller gives up (`copy=False`)."""

from __future__ import annotations

import helpers
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qdq_onnx import pipeline
from qdq_onnx.graph.float_types import FP16, fp16_pair
from qdq_onnx.graph.opset import upgrade_opset
from qdq_onnx.precision import qdq_values


def test_fp16_rounding_by_integers_is_numpys_cast_bit_for_bit():
    # every FP16 value, and the FP32 values at, beside and on each side of the midpoints
    # between FP16 neighbours (where ties to even decide), then random bit patterns
    # (NaNs, infinities, subnormals of both types included)
    f = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16) \
        .astype(np.float32).view(np.uint32)
    offsets = [0, 1, -1, 0xFFF, 0x1000, 0x1001, -0xFFF, -0x1000, -0x1001]
    patterns = np.concatenate([f + np.uint32(o & 0xFFFFFFFF) for o in offsets] +
                              [np.random.default_rng(0).integers(0, 1 << 32, 1 << 20,
                                                                 dtype=np.uint64)
                               .astype(np.uint32)])
    x = patterns.view(np.float32)
    half, wide = fp16_pair(x)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(half.view(np.uint16), want.view(np.uint16))
    np.testing.assert_array_equal(wide.view(np.uint32), want.astype(np.float32).view(np.uint32))
    assert fp16_pair(np.ones((2, 3), np.float32))[0].shape == (2, 3)


@pytest.mark.parametrize("zero_point", [False, True], ids=["symmetric", "zero-point"])
def test_prefiltered_matching_equals_testing_every_element(zero_point):
    """`_match` tests in full only the elements that can miss; on weights with every hard
    case (near rounding boundaries, saturation, FP16 subnormals, overflow, NaN) it gives
    the values `_match_all` gives testing everything."""
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


def test_typing_on_threads_equals_typing_on_one():
    from qdq_onnx.parallel.context import RunContext
    from qdq_onnx.precision.stage import type_model

    q = _qdq_model()
    one = type_model(q, run=RunContext(threads=1)).model
    many = type_model(q, run=RunContext(threads=3)).model
    assert one.SerializeToString() == many.SerializeToString()
    weights = [t for t in one.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(weights) >= 3


def test_a_typed_initializer_keeps_no_field_of_its_fp32_form():
    from qdq_onnx.graph.float_types import store_into, stored

    t = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    t.doc_string = "fp32 doc"
    t.float_data.extend([])  # raw_data set, typed fields empty
    want = stored(np.arange(6, dtype=np.float32).reshape(2, 3), "w", FP16)
    store_into(t, np.arange(6, dtype=np.float16).reshape(2, 3), FP16)
    assert t.SerializeToString() == want.SerializeToString()
    assert helper.printable_tensor_proto(t)  # a well-formed tensor
