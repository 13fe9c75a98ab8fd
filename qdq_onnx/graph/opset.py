"""Raising a model's opset with onnx's version converter, without copying its weights."""

from __future__ import annotations

import onnx
from onnx import version_converter

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset, skeleton


def upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` at default-domain `opset`: the converter runs on a weightless skeleton and
    the original weight protos are put back (the converter rewrites nodes, not weights)."""
    was = default_opset(model)
    try:
        converted = version_converter.convert_version(skeleton(model), opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise QdqError(f"upgrading the model from opset {was} to {opset} failed: {exc}") \
            from exc
    weights = {t.name: t for t in model.graph.initializer}
    for t in converted.graph.initializer:
        original = weights.get(t.name)
        if original is not None:
            t.CopyFrom(original)
    props = {n.name: n.metadata_props for n in model.graph.node if n.metadata_props}
    for node in converted.graph.node:  # the converter drops the nodes' rule ids
        if node.name in props and not node.metadata_props:
            node.metadata_props.extend(props[node.name])
    converted.ClearField("metadata_props")
    converted.metadata_props.extend(model.metadata_props)
    return converted
