"""The pass that rewrites, in the training graph, the ops onnxruntime-training cannot
differentiate (lowering.py, lowering_gather.py), with the sizes and constant inputs they
need found once for all of them."""

from __future__ import annotations

import numpy as np
import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.finetune.lowering import (
    ACTIVATIONS,
    AVERAGE_POOL,
    EXTREMES,
    LOWERED,
    NEEDS_SHAPES,
    ShapesNeeded,
    lower_activation,
    lower_average_pool,
    lower_conv_transpose,
    lower_extreme,
)
from qdq_onnx.finetune.lowering_gather import (
    PAD,
    RESIZE_OPS,
    SPLIT,
    lower_pad,
    lower_resize,
    lower_split,
    lowers_pad,
    resize_scales,
)
from qdq_onnx.graph.index import GraphIndex, attribute
from qdq_onnx.graph.shapes import probed_values, tensor_shapes


def _rewritten(node: onnx.NodeProto, read: set[str]) -> bool:
    if node.op_type == SPLIT:  # only one with an output nothing reads
        return any(o not in read for o in node.output)
    return node.op_type in LOWERED and (node.op_type != PAD or lowers_pad(node))


class Lowering:
    """Shapes at batch 1 (a dimension the graph leaves symbolic raises ShapesNeeded
    unless the graph was specialised to the data's sizes first)."""

    def __init__(self, model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> None:
        self.model, self.graph = model, model.graph
        self.opset = default_opset(model)
        self.originals: dict[str, onnx.NodeProto] = {}
        self.weights: list[str] = []  # weights the rewrites read (they stay trainable)
        self.read = {t for n in nodes for t in n.input} | {o.name for o in model.graph.output}
        shaped = [n for n in nodes if n.op_type in NEEDS_SHAPES and _rewritten(n, self.read)]
        wanted = [t for n in shaped for t in n.input[:2] if t]
        wanted += [n.output[0] for n in shaped if n.op_type in RESIZE_OPS]
        self.shapes = tensor_shapes(model, sorted(set(wanted))) if wanted else {}
        self.values = _fixed_inputs(model, [n for n in shaped
                                            if n.op_type in RESIZE_OPS | EXTREMES | {PAD, SPLIT}])

    def _dims(self, node: onnx.NodeProto, tensor: str, what: str) -> list[int]:
        dims = self.shapes.get(tensor)
        if not dims or None in dims:
            raise ShapesNeeded(f"{node.name}: {node.op_type} needs a known {what} size to be "
                               "trained (onnxruntime-training cannot differentiate it; the "
                               f"rewrite that replaces it gathers fixed positions), got {dims}")
        return dims

    def nodes(self, node: onnx.NodeProto, default: list[onnx.NodeProto]
              ) -> list[onnx.NodeProto]:
        if not _rewritten(node, self.read):
            return default
        if node.op_type in ACTIVATIONS:
            out = lower_activation(node, self.graph)
        elif node.op_type in RESIZE_OPS:
            dims = self._dims(node, node.input[0], "input")
            out_dims = self._dims(node, node.output[0], "output")
            scales = resize_scales(node, self.opset, self.values, dims, out_dims)
            out = lower_resize(node, self.opset, dims, out_dims, scales, self.graph)
        elif node.op_type == SPLIT:
            out = lower_split(node, self.opset, self._dims(node, node.input[0], "input"),
                              self.read, self.values, self.graph)
        elif node.op_type == PAD:
            out = lower_pad(node, self.opset, self._dims(node, node.input[0], "input"),
                            self.values, self.graph)
        elif node.op_type in EXTREMES:
            out = lower_extreme(node, self.shapes.get(node.input[0]),
                                self._reduce_axes(node), self.graph)
            if out is None:
                return default
        elif node.op_type == AVERAGE_POOL:
            out = lower_average_pool(node, self.shapes.get(node.input[0]), self.graph)
        else:
            weight_shape = self.shapes.get(node.input[1])
            if not weight_shape or None in weight_shape:
                raise QdqError(f"{node.name}: the ConvTranspose weight's shape is not known")
            out = lower_conv_transpose(node, self.shapes.get(node.input[0]), weight_shape,
                                       self.graph)
            self.weights.append(node.input[1])
        self.originals[node.name] = node
        return out


    def _reduce_axes(self, node: onnx.NodeProto) -> list[int] | None:
        """A reduction's axes: the attribute, or the input (opset 18); None for
        GlobalMaxPool; [] for all axes."""
        if node.op_type == "GlobalMaxPool":
            return None
        if len(node.input) > 1 and node.input[1]:
            if node.input[1] not in self.values:
                raise QdqError(f"{node.name}: {node.op_type} with computed axes cannot be "
                               "fine-tuned (its rewrite needs the axes)")
            return [int(a) for a in np.asarray(self.values[node.input[1]]).reshape(-1)]
        if attribute(node, "noop_with_empty_axes", 0) and not attribute(node, "axes", []):
            raise QdqError(f"{node.name}: a {node.op_type} that is a no-op cannot be "
                           "fine-tuned")
        return list(attribute(node, "axes", []))


def _fixed_inputs(model: onnx.ModelProto, nodes: list[onnx.NodeProto]
                  ) -> dict[str, np.ndarray]:
    """The non-data inputs of Resize/Upsample/Pad nodes (scales, sizes, pads, axes):
    constants read, the others (a size computed from Shape) computed by one run on zeros at
    the graph's known sizes."""
    index = GraphIndex(model.graph)
    values: dict[str, np.ndarray] = {}
    computed = []
    for node in nodes:
        for t in node.input[1:]:
            if not t:
                continue
            value = index.constant_value(t)
            if value is not None:
                values[t] = value
            else:
                computed.append(t)
    if computed:
        values.update(probed_values(model, sorted(set(computed))))
    return values
