"""Tensor shapes for the checks that need them: ONNX shape inference first and, where it
cannot follow a shape computed at run time (tf2onnx writes Shape -> Gather -> ReduceProd ->
Reshape around every attention einsum, which neither onnx's data propagation nor
onnxruntime's symbolic inference resolves), one run of the model on zeros at batch 1."""

from __future__ import annotations

import numpy as np
import onnx

from qdq_onnx.data.feeds import model_inputs
from qdq_onnx.graph.batch import pin_batch

Shape = list  # of int, or None for a dimension not known


def inferred_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes from ONNX shape inference at batch 1 (None for what it cannot know)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(pin_batch(model), data_prop=True)
    except Exception:  # noqa: BLE001 - callers judge only what is known
        return {}
    out = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                            for d in vi.type.tensor_type.shape.dim]
    return out


def probed_shapes(model: onnx.ModelProto, tensors: list[str]) -> dict[str, Shape]:
    """Shapes of `tensors` from one run on zeros at batch 1; {} when an input has another
    unknown dimension (a dynamic sequence) or the run fails."""
    from qdq_onnx.graph.sessions import inference_session, with_outputs

    feeds = {}
    for name, (dims, dtype) in model_inputs(model).items():
        dims = (1, *dims[1:]) if dims and dims[0] is None else dims
        if None in dims:
            return {}
        feeds[name] = np.zeros(dims, dtype)
    try:
        session = inference_session(with_outputs(model, tensors), optimize=False)
        values = session.run(tensors, feeds)
    except Exception:  # noqa: BLE001 - callers judge only what is known
        return {}
    return {t: list(v.shape) for t, v in zip(tensors, values)}


def tensor_shapes(model: onnx.ModelProto, tensors: list[str]) -> dict[str, Shape]:
    """The shapes of `tensors` at batch 1: inferred, or probed where inference leaves a
    dimension unknown."""
    known = inferred_shapes(model)
    out = {t: known.get(t) for t in tensors}
    unknown = [t for t, s in out.items() if s is None or None in s]
    if unknown:
        out.update(probed_shapes(model, unknown))
    return out
