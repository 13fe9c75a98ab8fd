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


SMALL_CONSTANT = 1024  # elements: constants shape arithmetic may read (kept with values)


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the values of its large initializers (declared as graph inputs of
    the same type and shape instead): what shape inference needs, without copying and
    serialising the weights of a 100 MB model. Small constants keep their values, which
    data propagation reads (Reshape targets, Slice bounds)."""
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain",
                  "model_version"):
        setattr(out, field, getattr(model, field))
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    g, src = out.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    declared = {i.name for i in src.input}
    for init in src.initializer:
        if int(np.prod(init.dims)) <= SMALL_CONSTANT:
            g.initializer.append(init)
        elif init.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type,
                                                              list(init.dims)))
    return out


def inferred_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes from ONNX shape inference at batch 1 (None for what it cannot know)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(pin_batch(skeleton(model)),
                                                     data_prop=True)
    except Exception:  # noqa: BLE001 - callers judge only what is known
        return {}
    out = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                            for d in vi.type.tensor_type.shape.dim]
    return out


def _zero_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """Zeros for every input at batch 1, or None when another dimension is unknown."""
    feeds = {}
    for name, (dims, dtype) in model_inputs(model).items():
        dims = (1, *dims[1:]) if dims and dims[0] is None else dims
        if None in dims:
            return None
        feeds[name] = np.zeros(dims, dtype)
    return feeds


def probed_values(model: onnx.ModelProto, tensors: list[str]) -> dict[str, np.ndarray]:
    """The values of `tensors` in one run on zeros at batch 1 (shape arithmetic such as
    a Resize's computed sizes); {} when an input has another unknown dimension (a dynamic
    sequence) or the run fails."""
    from qdq_onnx.graph.sessions import inference_session, with_outputs

    feeds = _zero_feeds(model)
    if feeds is None:
        return {}
    try:
        session = inference_session(with_outputs(model, tensors), optimize=False)
        values = session.run(tensors, feeds)
    except Exception:  # noqa: BLE001 - callers judge only what is known
        return {}
    return dict(zip(tensors, values))


def probed_shapes(model: onnx.ModelProto, tensors: list[str]) -> dict[str, Shape]:
    """Shapes of `tensors` from one run on zeros at batch 1; {} when an input has another
    unknown dimension (a dynamic sequence) or the run fails."""
    return {t: list(v.shape) for t, v in probed_values(model, tensors).items()}


def specialised(model: onnx.ModelProto, input_dims: dict[str, tuple[int, ...]]
                ) -> onnx.ModelProto:
    """A copy whose graph inputs take the sizes of `input_dims` (by name, batch first) in
    every dimension but the batch, without the value infos inferred for symbolic sizes:
    the training graph of a model with dynamic height and width, for data of one size."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        dims = input_dims.get(vi.name)
        if dims is None:
            continue
        shape = vi.type.tensor_type.shape.dim
        for d, size in zip(list(shape)[1:], dims[1:]):
            d.Clear()
            d.dim_value = int(size)
    del out.graph.value_info[:]
    return out


def tensor_shapes(model: onnx.ModelProto, tensors: list[str]) -> dict[str, Shape]:
    """The shapes of `tensors` at batch 1: inferred, or probed where inference leaves a
    dimension unknown."""
    known = inferred_shapes(model)
    out = {t: known.get(t) for t in tensors}
    unknown = [t for t, s in out.items() if s is None or None in s]
    if unknown:
        out.update(probed_shapes(model, unknown))
    return out


# Symbols exporters write for "not known" (paddle2onnx: '?'), not names of one size.
_ANONYMOUS = frozenset({"?", "-1"})


def _anonymous(d: onnx.TensorShapeProto.Dimension) -> bool:
    """A size written as -1 (not a valid dim_value) or an anonymous symbol."""
    return (d.HasField("dim_value") and d.dim_value < 0) or \
        (d.HasField("dim_param") and d.dim_param in _ANONYMOUS)


def distinct_unknowns(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which each unknown dimension of a graph input or output is its own
    symbol, without the value infos that hold invalid sizes: exporters write unknown sizes
    as -1 (not a valid dim_value) or one shared symbol such as '?' for both height and width
    (which ONNX reads as equal), and onnxruntime-training's gradient graph trusts them (a
    broadcast of 0 by 96 at the first step). Valid value infos stay: its gradients of
    Expand and Reshape need the static sizes they hold."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for k, vi in enumerate((*out.graph.input, *out.graph.output)):
        for j, d in enumerate(vi.type.tensor_type.shape.dim):
            if _anonymous(d):
                d.Clear()
                d.dim_param = f"unknown_{k}_{j}"
    valid = [vi for vi in out.graph.value_info
             if not any(_anonymous(d) for d in vi.type.tensor_type.shape.dim)]
    del out.graph.value_info[:]
    out.graph.value_info.extend(valid)
    return out


def symbolic_sizes(model: onnx.ModelProto) -> list[str]:
    """The graph inputs with an unknown size other than the leading (batch) dimension."""
    return [name for name, (dims, _) in model_inputs(model).items()
            if any(d is None for d in dims[1:])]

