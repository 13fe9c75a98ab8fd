"""Precision schemes: what one Q/DQ pair quantizes to.

A scheme names the element type of the quantized tensor (the QuantizeLinear output and the
zero point), the integer range used inside it, whether it is symmetric (zero point 0), and
how its scales are laid out (activations per tensor, weights per channel). Every placement
of a plan carries one; insertion (scales, zero points), calibration (levels), the
fake-quant training graph (clip range), lint (accepted zero points) and the file metadata
read it. This module is the only place TensorRT's INT8 range is written down.

It sits beside `errors` at the bottom of the package because the plan (placement) and the
stages after it all read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import onnx

from qdq_onnx.errors import SettingError

PER_TENSOR = "per-tensor"
PER_CHANNEL = "per-channel"


@dataclass(frozen=True)
class Scheme:
    """A symmetric quantization: `element_type` (onnx.TensorProto type of the quantized
    tensor), `bits` of range used in it (an integer scheme's qmax = 2**(bits-1) - 1; a
    float scheme's is `float_max`, the largest finite value of its type), and the scale
    layout of activations and weights."""

    name: str
    element_type: int
    bits: int
    symmetric: bool = True
    activation_axis: str = PER_TENSOR
    weight_axis: str = PER_CHANNEL
    float_max: float | None = None  # set for a floating-point quantized type (FP8)

    @property
    def is_float(self) -> bool:
        """Whether the quantized type is floating point (FP8): scales are amax / float_max,
        values are rounded to the type's grid, not to integers."""
        return self.float_max is not None

    @property
    def qmax(self) -> float:
        """The largest quantized value (127 for INT8, 448 for FP8 E4M3)."""
        if self.float_max is not None:
            return self.float_max
        return 2 ** (self.bits - 1) - 1

    @property
    def qmin(self) -> float:
        """The smallest quantized value (-128 for INT8: saturation is asymmetric; -448 for
        FP8 E4M3)."""
        if self.float_max is not None:
            return -self.float_max
        return -(self.qmax + 1)

    @property
    def levels(self) -> int:
        """Quantization levels of |x| (0..qmax): the chunk count of KL calibration."""
        return self.qmax + 1

    @property
    def zero_point_dtype(self) -> np.dtype:
        """The numpy dtype of this scheme's zero points (and quantized tensors); for FP8,
        uint8 holding the bit patterns (numpy has no FP8 type)."""
        if self.is_float:
            return np.dtype(np.uint8)
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.element_type))

    @property
    def element_name(self) -> str:
        """The ONNX element type's name, e.g. INT8."""
        return onnx.TensorProto.DataType.Name(self.element_type)

    def with_bits(self, bits: int) -> Scheme:
        """This scheme with a narrower range inside the same element type (experiments: a
        4-bit range in int8 Q/DQ)."""
        if self.is_float:
            raise SettingError("weight_bits", f"{self.name} has no narrower range; "
                                              f"narrow ranges are for integer schemes")
        if not 2 <= bits <= self._container_bits():
            raise SettingError("weight_bits", f"must be 2-{self._container_bits()}, got {bits}")
        if bits == self._container_bits():
            return SCHEMES[self._family()]
        return replace(self, name=f"{self._family()}-{bits}bit", bits=bits)

    def _container_bits(self) -> int:
        return self.zero_point_dtype.itemsize * 8

    def _family(self) -> str:
        return self.name.split("-", 1)[0]

    def describe(self) -> str:
        """One line for listings."""
        return (f"{self.name}: {self.element_name} Q/DQ, range [{self.qmin:g}, {self.qmax:g}], "
                f"{'symmetric (zero point 0)' if self.symmetric else 'asymmetric'}, "
                f"activations {self.activation_axis}, weights {self.weight_axis}")


# TensorRT's explicit quantization: signed 8-bit, zero point 0, per-tensor activations,
# per-channel weights (developer guide, "Explicit quantization").
INT8 = Scheme("int8", onnx.TensorProto.INT8, bits=8)
# FP8 E4M3 (float8e4m3fn: no infinities, saturating at +-448): TensorRT's FP8, symmetric,
# per-tensor activations (scale amax / 448) and per-tensor weights, as Model Optimizer's
# FP8_DEFAULT_CFG: TensorRT added per-channel FP8 scales only for GEMMs on Hopper (10.6
# release notes), while per-tensor FP8 runs wherever FP8 does.
FP8 = Scheme("fp8", onnx.TensorProto.FLOAT8E4M3FN, bits=8, weight_axis=PER_TENSOR,
             float_max=448.0)
SCHEMES: dict[str, Scheme] = {INT8.name: INT8, FP8.name: FP8}
DEFAULT_SCHEME = INT8.name
_NARROW = re.compile(r"^(?P<family>[a-z0-9]+)-(?P<bits>\d+)bit$")


def scheme_named(name: str, setting: str = "scheme") -> Scheme:
    """The scheme called `name` ("int8", or "int8-4bit" for a 4-bit range in int8 Q/DQ);
    SettingError naming `setting` otherwise."""
    if isinstance(name, Scheme):
        return name
    if name in SCHEMES:
        return SCHEMES[name]
    m = _NARROW.match(str(name))
    if m and m["family"] in SCHEMES:
        return SCHEMES[m["family"]].with_bits(int(m["bits"]))
    raise SettingError(setting, f"names no precision scheme: {name!r}; known: "
                                f"{', '.join(SCHEMES)} (or e.g. int8-4bit)")


def scheme_of_zero_point(dtype: np.dtype | int) -> Scheme | None:
    """The full-range scheme whose quantized type is `dtype` (a numpy dtype of an integer
    scheme, or an onnx.TensorProto element type), or None."""
    for scheme in SCHEMES.values():
        if isinstance(dtype, int):
            if scheme.element_type == dtype:
                return scheme
        elif not scheme.is_float and scheme.zero_point_dtype == np.dtype(dtype):
            return scheme
    return None
