"""Weights that cannot be quantized: NaN or Inf in a float initializer (a diverged or
corrupted export). Scales computed from them are NaN, and the written file would be too."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.errors import QdqError

_FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
           onnx.TensorProto.FLOAT16: np.float16}


def non_finite(tensor: onnx.TensorProto) -> int:
    """How many NaN/Inf values a float initializer holds (0 for other types)."""
    dtype = _FLOATS.get(tensor.data_type)
    if dtype is None or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    # raw_data is viewed, not copied: this runs over every weight of large models.
    values = np.frombuffer(tensor.raw_data, dtype) if tensor.HasField("raw_data") \
        else numpy_helper.to_array(tensor)
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def require_finite_weights(model: onnx.ModelProto, source: str = "") -> None:
    """QdqError naming the first weight with NaN/Inf values (and `source`, the file)."""
    for t in model.graph.initializer:
        bad = non_finite(t)
        if bad:
            size = int(np.prod(t.dims)) if t.dims else 1
            where = f"{source}: " if source else ""
            raise QdqError(f"{where}weight {t.name!r} holds NaN/Inf ({bad} of {size} "
                           "values); quantizing it would write NaN scales: fix the float "
                           "model (a diverged training run?) and export it again")
