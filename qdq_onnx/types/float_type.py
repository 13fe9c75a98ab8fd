"""The float types a remainder can have, and storing values in them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qdq_onnx.errors import SettingError


@dataclass(frozen=True)
class FloatType:
    """A floating-point element type: its ONNX type, largest finite value, smallest
    normal value and smallest positive (subnormal) value."""

    name: str
    elem_type: int
    max: float
    min_normal: float
    min_positive: float
    mantissa_bits: int

    @property
    def is_fp32(self) -> bool:
        """Whether this is FP32 (nothing to convert)."""
        return self.elem_type == onnx.TensorProto.FLOAT


FP32 = FloatType("fp32", onnx.TensorProto.FLOAT, float(np.finfo(np.float32).max),
                 float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).smallest_subnormal),
                 23)
FP16 = FloatType("fp16", onnx.TensorProto.FLOAT16, 65504.0, 2.0**-14, 2.0**-24, 10)
# BF16 has FP32's exponent range with 7 stored mantissa bits.
BF16 = FloatType("bf16", onnx.TensorProto.BFLOAT16, float.fromhex("0x1.fep127"), 2.0**-126,
                 2.0**-133, 7)
FLOAT_TYPES = {t.name: t for t in (FP16, BF16, FP32)}
HIGH_PRECISIONS = tuple(FLOAT_TYPES)
REDUCED_ELEM_TYPES = frozenset({FP16.elem_type, BF16.elem_type})


def float_type(name: str | FloatType, setting: str = "high_precision") -> FloatType:
    """The float type called `name` (fp16, bf16, fp32); SettingError otherwise."""
    if isinstance(name, FloatType):
        return name
    if name not in FLOAT_TYPES:
        raise SettingError(setting, f"must be one of {', '.join(HIGH_PRECISIONS)}, got "
                                    f"{name!r}")
    return FLOAT_TYPES[name]


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """FP32 values as BF16 bit patterns, rounded to nearest even (NaN stays NaN)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    bits = v.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(v)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """BF16 bit patterns as FP32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# FP32 bit patterns: FP16's smallest normal (2^-14), and the least magnitude that rounds
# to infinity in FP16 (65520, the tie above 65504, goes to the even: infinity).
_FP16_NORMAL_BITS, _FP16_INF_BITS = np.uint32(0x38800000), np.uint32(0x477FF000)


def fp16_pair(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FP32 `values` rounded to FP16 (nearest, ties to even), as a float16 array and as
    the same values in float32, bit for bit what numpy's casts give. Done with integer
    operations: numpy casts to and from float16 one element at a time (about 2.5 ns each,
    measured with numpy 2.4 on an AVX-512 CPU), these run vectorised; the few values
    outside FP16's normal range (subnormals, zeros, overflow, NaN) are cast by numpy."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    bits = v.view(np.uint32)
    mag = bits & np.uint32(0x7FFFFFFF)
    near = mag >> np.uint32(13)
    near &= np.uint32(1)
    near += np.uint32(0xFFF)
    near += mag  # round half to even at FP16's 10 mantissa bits
    near &= np.uint32(0xFFFFE000)
    sign = bits & np.uint32(0x80000000)
    wide = near | sign
    near -= np.uint32(0x38000000)  # rebias the exponent: FP32's 127 to FP16's 15
    near >>= np.uint32(13)
    sign >>= np.uint32(16)
    near |= sign
    half = near.astype(np.uint16).view(np.float16)
    mag -= _FP16_NORMAL_BITS  # wraps below FP16's normal range: one unsigned test for both
    odd = np.flatnonzero(mag >= _FP16_INF_BITS - _FP16_NORMAL_BITS)
    if odd.size:
        with np.errstate(over="ignore"):  # infinity where the value overflows, as cast
            flat = v.reshape(-1)[odd].astype(np.float16)
        half.reshape(-1)[odd] = flat
        wide.reshape(-1)[odd] = flat.astype(np.float32).view(np.uint32)
    return half, wide.view(np.float32)


def rounded(values: np.ndarray, kind: FloatType) -> np.ndarray:
    """`values` rounded to `kind`, returned as FP32 (what the file will hold)."""
    v = np.asarray(values, dtype=np.float32)
    if kind is FP16 or kind.elem_type == FP16.elem_type:
        return fp16_pair(v)[1].reshape(v.shape)
    if kind.elem_type == BF16.elem_type:
        return from_bf16_bits(_bf16_bits(v))
    return v


def stored(values: np.ndarray, name: str, kind: FloatType) -> onnx.TensorProto:
    """An initializer of `values` (float; float16 ones are taken as they are for FP16)
    stored in `kind`."""
    tensor = onnx.TensorProto()
    if name:  # proto2: an empty name set is still written (a Constant's value has none)
        tensor.name = name
    store_into(tensor, values, kind)
    return tensor


def store_into(tensor: onnx.TensorProto, values: np.ndarray, kind: FloatType) -> None:
    """`tensor` made the initializer `stored` makes of `values` (its name kept), written in
    place: a large weight's bytes are not copied a second time."""
    name = tensor.name
    tensor.Clear()  # no payload, external-data entry or doc string of the FP32 one stays
    if name:
        tensor.name = name
    tensor.dims.extend(np.shape(values))
    tensor.data_type = kind.elem_type
    if kind.elem_type == FP16.elem_type:
        tensor.raw_data = np.asarray(values).astype("<f2", copy=False).tobytes()
    elif kind.elem_type == BF16.elem_type:
        tensor.raw_data = _bf16_bits(np.asarray(values, np.float32)).astype("<u2").tobytes()
    else:
        tensor.raw_data = np.asarray(values).astype("<f4", copy=False).tobytes()


def as_fp32(tensor: onnx.TensorProto) -> np.ndarray:
    """An initializer's values as FP32, whatever float type it is stored in."""
    if tensor.data_type == BF16.elem_type:
        if tensor.raw_data:
            return from_bf16_bits(np.frombuffer(tensor.raw_data, np.uint16)).reshape(
                tuple(tensor.dims))
        return from_bf16_bits(np.asarray(tensor.int32_data, np.uint16)).reshape(
            tuple(tensor.dims))
    # to_array already made a fresh array: no second copy when it is FP32
    return onnx.numpy_helper.to_array(tensor).astype(np.float32, copy=False)
