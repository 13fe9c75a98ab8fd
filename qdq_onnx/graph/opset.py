"""Raising a model's opset with onnx's version converter, without copying its weights."""

from __future__ import annotations

import onnx
from onnx import version_converter

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset, skeleton


def upgrade_opset(model: onnx.ModelProto, opset: int, in_place: bool = False
                  ) -> onnx.ModelProto:
    """`model` at default-domain `opset`: the converter runs on a weightless skeleton.
    `in_place`: the converted nodes go into `model` itself and no weight is copied (for a
    caller that owns it); otherwise a new model with the original weight protos put back
    (the converter rewrites nodes, not weights)."""
    was = default_opset(model)
    try:
        converted = version_converter.convert_version(skeleton(model), opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise QdqError(f"upgrading the model from opset {was} to {opset} failed: {exc}") \
            from exc
    props = {n.name: n.metadata_props for n in model.graph.node if n.metadata_props}
    for node in converted.graph.node:  # the converter drops the nodes' rule ids
        if node.name in props and not node.metadata_props:
            node.metadata_props.extend(props[node.name])
    if in_place:
        return _into(model, converted)
    weights = {t.name: t for t in model.graph.initializer}
    for t in converted.graph.initializer:
        original = weights.get(t.name)
        if original is not None:
            t.CopyFrom(original)
    converted.ClearField("metadata_props")
    converted.metadata_props.extend(model.metadata_props)
    return converted


def _into(model: onnx.ModelProto, converted: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with `converted`'s opsets, nodes and declared tensors, its own weights kept
    (those the converter dropped removed, any it added appended)."""
    for name in ("opset_import", "ir_version"):
        model.ClearField(name)
    model.opset_import.extend(converted.opset_import)
    model.ir_version = converted.ir_version
    g, c = model.graph, converted.graph
    for field in ("node", "input", "output", "value_info"):
        g.ClearField(field)
        getattr(g, field).extend(getattr(c, field))
    made = {t.name for t in c.initializer}
    have = {t.name for t in g.initializer}
    for i in reversed(range(len(g.initializer))):  # in place: no weight is copied
        if g.initializer[i].name not in made:
            del g.initializer[i]
    g.initializer.extend(t for t in c.initializer if t.name not in have)
    return model
