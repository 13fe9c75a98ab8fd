"""Multiply-accumulates of the weighted ops from shapes: what quantizing a layer can save.

A Conv or ConvTranspose costs (output elements) x (input channels per group) x (kernel
size); a MatMul or Gemm (output elements) x (the reduced dimension). Shapes are taken at
batch 1 (inferred, else probed by one run on zeros); a dimension nothing can tell counts
as 1, so a shape-less layer still has its weight's reduction as its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex, attribute


@dataclass(frozen=True)
class LayerCost:
    """A weighted op's size: `macs` at batch 1, its output and input channel counts (from
    the weight), the convolution `group` and kernel element count (1 for GEMMs)."""

    node: str
    op: str
    macs: int
    out_channels: int | None
    in_channels: int | None
    group: int = 1
    kernel: int = 1

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.in_channels == 1

    @property
    def grouped(self) -> bool:
        return self.group > 1


def _weight_shape(index: GraphIndex, tensor: str) -> tuple[int, ...] | None:
    """A weight's shape: a constant, or the constant behind its DequantizeLinear (and the
    QuantizeLinear before it, as onnxruntime writes them)."""
    for _ in range(3):
        shape = index.constant_shape(tensor)
        if shape is not None:
            return shape
        node = index.producer.get(tensor)
        if node is None or node.op_type not in ops.QDQ_OPS:
            return None
        tensor = node.input[0]
    return None


def _elements(shape: list | None) -> int:
    return int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in shape or [1]]))


def _conv_cost(node: onnx.NodeProto, w: tuple[int, ...], out_shape: list | None) -> LayerCost:
    group = int(attribute(node, "group", 1) or 1)
    kernel = int(np.prod(w[2:])) if len(w) > 2 else 1
    if node.op_type == ops.CONV_TRANSPOSE:  # weight [C_in, C_out / group, k...]
        out_channels, per_group = w[1] * group, w[0] // max(group, 1)
    else:  # weight [C_out, C_in / group, k...]
        out_channels, per_group = w[0], w[1]
    macs = _elements(out_shape) * per_group * kernel if out_shape else (
        out_channels * per_group * kernel)
    return LayerCost(node.name, node.op_type, macs, out_channels, per_group, group, kernel)


def _gemm_cost(node: onnx.NodeProto, index: GraphIndex, shapes: dict[str, list | None]
               ) -> LayerCost:
    w = _weight_shape(index, node.input[1])
    a = shapes.get(node.input[0])
    if w is not None and len(w) >= 2:
        trans_b = node.op_type == ops.GEMM and attribute(node, "transB", 0)
        k, n = (w[-1], w[-2]) if trans_b else (w[-2], w[-1])
    elif a:
        k, n = a[-1] if isinstance(a[-1], int) else 1, None
    else:
        k, n = 1, None
    out = shapes.get(node.output[0])
    macs = _elements(out) * int(k) if out else int(k) * int(n or 1)
    return LayerCost(node.name, node.op_type, macs, n, int(k) if k else None)


def layer_costs(model: onnx.ModelProto, index: GraphIndex | None = None,
                input_dims: dict[str, tuple[int, ...]] | None = None) -> dict[str, LayerCost]:
    """Cost of every Conv, ConvTranspose, MatMul and Gemm of `model` (float or Q/DQ), by
    node name; `input_dims` (input name -> the data's shape) sizes symbolic dimensions."""
    from qdq_onnx.graph.shapes import inferred_shapes, specialised, tensor_shapes

    index = index or GraphIndex(model.graph)
    nodes = [n for n in index.nodes if n.op_type in ops.WEIGHTED_OPS and len(n.input) > 1]
    wanted = [t for n in nodes for t in (n.input[0], n.output[0])]
    sized = specialised(model, input_dims) if input_dims else model
    # A run on zeros sizes what inference cannot, at the data's shape only, and never for
    # a model near protobuf's limit (placement needs channel counts, not a run).
    probe = bool(input_dims) and model.ByteSize() < 2**30
    shapes = (tensor_shapes(sized, wanted) if probe else inferred_shapes(sized)) if nodes else {}
    out = {}
    for n in nodes:
        if ops.is_convolution(n.op_type):
            w = _weight_shape(index, n.input[1])
            if w is None or len(w) < 3:
                continue  # a convolution with a computed weight: not sized here
            out[n.name] = _conv_cost(n, w, shapes.get(n.output[0]))
        else:
            out[n.name] = _gemm_cost(n, index, shapes)
    return out


def quantized_macs_share(model: onnx.ModelProto,
                         input_dims: dict[str, tuple[int, ...]] | None = None) -> float:
    """The share of a Q/DQ model's weighted-layer MACs whose data and weight inputs both
    come through DequantizeLinear (what TensorRT runs quantized); 0 without weighted ops."""
    index = GraphIndex(model.graph)
    costs = layer_costs(model, index, input_dims)

    def dequantized(tensor: str) -> bool:
        node = index.producer.get(tensor)
        return node is not None and node.op_type == ops.DEQUANTIZE

    total = sum(c.macs for c in costs.values())
    quantized = sum(c.macs for name, c in costs.items()
                    if all(dequantized(t) for t in index.by_name[name].input[:2]))
    return quantized / total if total else 0.0


def data_shapes(data: Any, model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Input name -> the shape of the first sample batch of `data` (what sizes a model's
    symbolic dimensions for `layer_costs`); {} when the data gives none."""
    from qdq_onnx.data.feeds import as_batches

    batches, _ = as_batches(data, model, batch_size=1, limit=1, any_batch=True)
    return {k: tuple(v.shape) for k, v in next(iter(batches), {}).items()}
