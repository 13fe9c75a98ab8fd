"""Weights that cannot be quantized: NaN or Inf in a float initializer (a diverged or
corrupted export). Scales computed from them are NaN, and the written file would be too."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.errors import QdqError

_FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
           onnx.TensorProto.FLOAT16: np.float16}


def _values(tensor: onnx.TensorProto) -> np.ndarray | None:
    dtype = _FLOATS.get(tensor.data_type)
    if dtype is None or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    # raw_data is viewed, not copied: this runs over every weight of large models.
    return np.frombuffer(tensor.raw_data, dtype) if tensor.HasField("raw_data") \
        else numpy_helper.to_array(tensor)


def non_finite(tensor: onnx.TensorProto, nan_only: bool = False) -> int:
    """How many NaN/Inf values (NaN only with `nan_only`) a float initializer holds (0 for
    other types)."""
    values = _values(tensor)
    if values is None:
        return 0
    with np.errstate(all="ignore"):
        # one reduction, no mask: a NaN or infinity makes the sum non-finite (a finite
        # sum that overflows is then counted exactly)
        if np.isfinite(np.add.reduce(values, axis=None, dtype=values.dtype)):
            return 0
    if nan_only:
        return int(np.count_nonzero(np.isnan(values)))
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def require_finite_weights(model: onnx.ModelProto, source: str = "",
                           finite: dict[str, bool] | None = None) -> None:
    """QdqError naming the first weight with NaN/Inf values (and `source`, the file). An
    infinity in a constant that no weighted op reads is meant (-inf as the start of a Max,
    a mask's fill): only NaN is refused there. `finite`: what a caller that already read
    some weights found (name -> no NaN/Inf); those are not read again unless they fail."""
    from qdq_onnx.graph.ops import WEIGHTED_OPS

    weights = {t for n in model.graph.node if n.op_type in WEIGHTED_OPS for t in n.input[1:]}
    known = finite or {}
    for t in model.graph.initializer:
        if known.get(t.name, False):
            continue
        bad = non_finite(t, nan_only=t.name not in weights and t.name not in known)
        if bad:
            size = int(np.prod(t.dims)) if t.dims else 1
            where = f"{source}: " if source else ""
            raise QdqError(f"{where}weight {t.name!r} holds NaN/Inf ({bad} of {size} "
                           "values); quantizing it would write NaN scales: fix the float "
                           "model (a diverged training run?) and export it again")
