"""Models exported with a fixed batch size (1 is common for TensorRT deployments): the graphs
qdq-onnx builds for calibration and training take any batch; the files it writes keep the
user's input shape."""

from __future__ import annotations

import onnx

BATCH_PARAM = "batch"


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The fixed leading dimension of the graph inputs (not initializers), or None."""
    inits = {t.name for t in model.graph.initializer}
    dims = {vi.type.tensor_type.shape.dim[0].dim_value for vi in model.graph.input
            if vi.name not in inits and vi.type.tensor_type.shape.dim
            and vi.type.tensor_type.shape.dim[0].HasField("dim_value")
            and vi.type.tensor_type.shape.dim[0].dim_value > 0}  # -1: unknown (paddle2onnx)
    return min(dims) if dims else None


def relax_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph inputs, outputs and value infos have a symbolic leading dimension
    where the model fixed it to `fixed_batch(model)`."""
    batch = fixed_batch(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if batch is None:
        return out
    g = out.graph
    for vi in (*g.input, *g.output, *g.value_info):
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = BATCH_PARAM
    return out


def pin_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """A copy whose graph inputs have a symbolic leading dimension set to `batch`, without
    the inferred value infos: with every dimension known, shape inference can follow a
    shape computed at run time (Shape -> Gather -> Concat -> Reshape, as tf2onnx writes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name for t in out.graph.initializer}
    for vi in out.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in inits and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del out.graph.value_info[:]
    return out


def follows_batch(model: onnx.ModelProto, feed: dict) -> bool:
    """Whether `model` with its fixed batch relaxed runs on `feed` (two samples or more)
    and every output keeps that many samples: a graph can hard-code its batch (a Reshape
    to [1, -1, 85] runs relaxed but makes one sample of two)."""
    from qdq_onnx.graph.sessions import inference_session

    n = next(iter(feed.values())).shape[0]
    try:
        session = inference_session(relax_batch(model))
        values = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types for shape errors
        return False
    return all(v.ndim > 0 and v.shape[0] == n for v in values)

