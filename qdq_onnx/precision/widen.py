"""Back to an FP32 remainder: the working form calibration and fine-tuning read. FP16 and
BF16 values widen to FP32 exactly; the Casts the typing added are removed."""

from __future__ import annotations

import onnx

from qdq_onnx.files.metadata import CAST_KEY
from qdq_onnx.precision.graph_types import FLOAT
from qdq_onnx.precision.record import record_remainder
from qdq_onnx.types.float_type import REDUCED_ELEM_TYPES, as_fp32


def is_reduced(model: onnx.ModelProto) -> bool:
    """Whether any initializer or declared tensor of the main graph is FP16/BF16."""
    g = model.graph
    return any(t.data_type in REDUCED_ELEM_TYPES for t in g.initializer) or any(
        v.type.tensor_type.elem_type in REDUCED_ELEM_TYPES
        for v in (*g.input, *g.output, *g.value_info))


def widen(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every FP16/BF16 tensor FP32 and the typing's Casts removed
    (`model` itself when nothing is reduced)."""
    if not is_reduced(model):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for i, t in enumerate(g.initializer):
        if t.data_type in REDUCED_ELEM_TYPES:
            g.initializer[i].CopyFrom(onnx.numpy_helper.from_array(as_fp32(t), t.name))
    ours = [n for n in g.node if any(p.key == CAST_KEY for p in n.metadata_props)]
    bypass = {n.output[0]: n.input[0] for n in ours}
    outputs = {o.name for o in g.output}
    rename = {src: out_name for out_name, src in bypass.items() if out_name in outputs}
    kept = [n for n in g.node if n not in ours]
    for node in kept:
        for j, t in enumerate(node.input):
            node.input[j] = rename.get(bypass.get(t, t), bypass.get(t, t))
        for j, t in enumerate(node.output):
            node.output[j] = rename.get(t, t)
        _widen_attributes(node)
    del g.node[:]
    g.node.extend(kept)
    for v in (*g.input, *g.output, *g.value_info):
        if v.type.tensor_type.elem_type in REDUCED_ELEM_TYPES:
            v.type.tensor_type.elem_type = FLOAT
    record_remainder(out, "fp32", [])
    return out


def _widen_attributes(node: onnx.NodeProto) -> None:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in REDUCED_ELEM_TYPES:
            a.t.CopyFrom(onnx.numpy_helper.from_array(as_fp32(a.t), a.t.name))
        elif a.name in ("dtype", "to") and a.type == onnx.AttributeProto.INT \
                and a.i in REDUCED_ELEM_TYPES:
            a.i = FLOAT
