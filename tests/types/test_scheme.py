"""Quantization schemes (`qdq_onnx.types.scheme`): INT8 as TensorRT quantizes, FP8 E4M3,
narrowed ranges inside the INT8 container, and names that are not a scheme refused."""

import numpy as np
import onnx
import pytest

from qdq_onnx.errors import SettingError
from qdq_onnx.types.scheme import INT8, SCHEMES, scheme_named, scheme_of_zero_point


def test_int8_is_tensorrts_range():
    assert (INT8.qmin, INT8.qmax, INT8.levels, INT8.bits) == (-128, 127, 128, 8)
    assert INT8.zero_point_dtype == np.int8 and INT8.element_name == "INT8"
    assert INT8.symmetric and INT8.activation_axis == "per-tensor"
    assert INT8.weight_axis == "per-channel"
    assert scheme_of_zero_point(np.dtype(np.int8)) is INT8
    assert scheme_of_zero_point(np.dtype(np.uint8)) is None
    assert set(SCHEMES) == {"int8", "fp8"}


def test_fp8_is_e4m3_saturating_at_448():
    from qdq_onnx.types.scheme import FP8

    assert FP8.is_float and (FP8.qmin, FP8.qmax) == (-448.0, 448.0)
    assert FP8.element_type == onnx.TensorProto.FLOAT8E4M3FN
    assert scheme_of_zero_point(onnx.TensorProto.FLOAT8E4M3FN) is FP8
    assert scheme_of_zero_point(np.dtype(np.uint8)) is None  # bit patterns are not a type
    with pytest.raises(SettingError, match="no narrower range"):
        FP8.with_bits(4)


def test_narrowed_schemes_keep_the_int8_container():
    four = scheme_named("int8-4bit")
    assert (four.qmin, four.qmax, four.zero_point_dtype) == (-8, 7, np.int8)
    assert four == INT8.with_bits(4) and INT8.with_bits(8) is INT8
    for bad in ("int8-1bit", "int8-9bit", "fp8-4bit", "int4"):
        with pytest.raises(SettingError):
            scheme_named(bad)
