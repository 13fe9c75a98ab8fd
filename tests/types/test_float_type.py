"""Float types of the remainder (`qdq_onnx.types.float_type`): names, rounding to FP16
exactly as numpy casts, and storing values in place."""

import numpy as np
import pytest
from onnx import helper, numpy_helper

from qdq_onnx.errors import SettingError
from qdq_onnx.types.float_type import BF16, FP16, FP32, float_type, fp16_pair, rounded


def test_float_types_by_name_and_unknown_names_refused():
    assert [float_type(n) for n in ("fp16", "bf16", "fp32")] == [FP16, BF16, FP32]
    assert float_type(FP16) is FP16 and FP32.is_fp32 and not FP16.is_fp32
    with pytest.raises(SettingError, match="fp16, bf16, fp32"):
        float_type("fp8")
    assert rounded(np.float32([1 + 2**-12]), BF16)[0] == 1.0


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


def test_a_typed_initializer_keeps_no_field_of_its_fp32_form():
    from qdq_onnx.types.float_type import store_into, stored

    t = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    t.doc_string = "fp32 doc"
    t.float_data.extend([])  # raw_data set, typed fields empty
    # the reference is onnx's own from_array of the FP16 values
    want = numpy_helper.from_array(np.arange(6, dtype=np.float16).reshape(2, 3), "w")
    store_into(t, np.arange(6, dtype=np.float16).reshape(2, 3), FP16)
    assert t.SerializeToString() == want.SerializeToString()
    assert helper.printable_tensor_proto(t)  # a well-formed tensor
    for kind, dtype in ((FP16, np.float16), (FP32, np.float32)):
        values = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
        for name in ("v", ""):  # a Constant's value tensor has no name
            assert stored(values, name, kind).SerializeToString() == \
                numpy_helper.from_array(values.astype(dtype), name).SerializeToString()
