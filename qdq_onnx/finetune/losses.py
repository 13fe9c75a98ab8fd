"""Losses and metrics for fine-tuning: Keras names mapped to onnxruntime-training blocks,
label preparation, and accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.errors import QdqError

LOSSES = {
    "sparse_categorical_crossentropy": "ce",
    "categorical_crossentropy": "ce",
    "binary_crossentropy": "bce",
    "mse": "mse",
    "mean_squared_error": "mse",
}


@dataclass(frozen=True)
class LossSpec:
    name: str
    from_logits: bool = True

    @property
    def kind(self) -> str:
        try:
            return LOSSES[self.name]
        except KeyError as err:
            raise QdqError(f"unknown loss {self.name!r}; use one of "
                           f"{', '.join(sorted(set(LOSSES)))}") from err

    def block(self, onnxblock):
        kind = self.kind
        if kind == "ce":
            return onnxblock.loss.CrossEntropyLoss()
        if kind == "bce":
            return onnxblock.loss.BCEWithLogitsLoss()
        return onnxblock.loss.MSELoss()

    def add_loss_input(self, model: onnx.ModelProto, output: str, tag: str = "",
                       labels: str = "labels") -> str:
        """Append the ops that turn probabilities into the logits the loss blocks expect;
        returns the tensor the loss reads. `tag` keeps the names of several outputs' ops
        apart."""
        g = model.graph
        rank = len(next(o for o in g.output if o.name == output).type.tensor_type.shape.dim)
        if self.kind == "ce" and rank > 2:
            output = _classes_to_axis_1(model, output, rank, tag, labels)
        if self.from_logits or self.kind == "mse":
            return output

        def name(base: str) -> str:
            return f"{base}{tag}"

        if self.kind == "ce":  # softmax(log p) = p, so log-probabilities act as logits
            logits = log_probabilities(g, output, tag=tag)
        else:  # logit(p) = log p - log(1 - p)
            clipped, logits = clip_probabilities(g, output, tag=tag), name("qdq_onnx_loss_logits")
            unit, q = name("qdq_onnx_loss_unit"), name("qdq_onnx_loss_q")
            logp, logq = name("qdq_onnx_loss_logp"), name("qdq_onnx_loss_logq")
            g.initializer.append(numpy_helper.from_array(np.float32(1.0), unit))
            g.node.extend([
                helper.make_node("Sub", [unit, clipped], [q], name=name("ql_sub")),
                helper.make_node("Log", [clipped], [logp], name=name("ql_logp")),
                helper.make_node("Log", [q], [logq], name=name("ql_logq")),
                helper.make_node("Sub", [logp, logq], [logits], name=name("ql_logit"))])
        info = onnx.ValueInfoProto()  # same type and shape as the probabilities
        info.CopyFrom(next(o for o in g.output if o.name == output))
        info.name = logits
        g.output.append(info)
        return logits

    def labels(self, y: np.ndarray, output_shape: tuple, source: str = "labels"
               ) -> np.ndarray:
        """Labels in the form the loss block takes, checked against the model output."""
        y = np.asarray(y)
        if y.dtype == object or not np.issubdtype(y.dtype, np.number):
            raise QdqError(f"{source}: labels must be numeric, got dtype {y.dtype}")
        if not np.all(np.isfinite(y)):
            raise QdqError(f"{source}: labels hold NaN/Inf")
        classes = output_shape[-1] if output_shape else None
        dense = tuple(output_shape[1:-1])  # per-position classes (segmentation)
        if self.name == "sparse_categorical_crossentropy":
            if y.ndim == 2 and y.shape[1] == 1 and not dense:
                y = y[:, 0]
            if y.ndim != 1 + len(dense) or any(
                    d not in (-1, g) for g, d in zip(y.shape[1:], dense)):
                raise QdqError(f"{source}: sparse categorical labels are class indices of "
                               f"shape [N{''.join(f', {d}' for d in dense)}], got "
                               f"{list(y.shape)}")
            y = y.astype(np.int64)
            if classes and (y.min() < 0 or y.max() >= classes):
                raise QdqError(f"{source}: class indices span {y.min()}..{y.max()} but the "
                               f"model has {classes} outputs")
            return y
        if self.name == "categorical_crossentropy":
            if y.ndim != 2 or (classes and y.shape[1] != classes) or dense:
                raise QdqError(f"{source}: categorical labels are one-hot [N, {classes}], "
                               f"got {list(y.shape)}")
            hard = np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)
            if not hard:
                raise QdqError(f"{source}: soft (non one-hot) labels are not supported; "
                               "give class indices with sparse_categorical_crossentropy")
            return np.argmax(y, axis=1).astype(np.int64)
        y = y.astype(np.float32)
        want = tuple(output_shape[1:])
        if y.ndim == 1 and want == (1,):
            y = y[:, None]
        if len(y.shape[1:]) != len(want) or any(
                w not in (-1, g) for g, w in zip(y.shape[1:], want)):  # -1: not fixed
            raise QdqError(f"{source}: labels have shape {list(y.shape)} but the model "
                           f"output is [N, {', '.join(map(str, want))}]")
        return y

    def correct(self, output: np.ndarray, y: np.ndarray) -> tuple[int, int] | None:
        """(correct predictions, predictions), or None where accuracy is undefined (MSE)."""
        kind = self.kind
        if kind == "ce":  # per sample, or per position of a segmentation
            return int(np.sum(np.argmax(output, axis=-1) == y)), int(y.size)
        if kind == "bce":
            threshold = 0.0 if self.from_logits else 0.5
            return int(np.sum((output > threshold) == (y > 0.5))), int(y.size)
        return None


def clip_probabilities(graph: onnx.GraphProto, probabilities: str,
                       prefix: str = "qdq_onnx_loss", tag: str = "") -> str:
    """Append Clip(p, 1e-7, 1 - 1e-7) of `probabilities` to `graph` (so that their log
    stays finite); returns the clipped tensor. `prefix` and `tag` keep the names apart."""
    eps, one = f"{prefix}_eps{tag}", f"{prefix}_one{tag}"
    graph.initializer.extend([numpy_helper.from_array(np.float32(1e-7), eps),
                              numpy_helper.from_array(np.float32(1.0 - 1e-7), one)])
    clipped = f"{prefix}_clipped{tag}"
    graph.node.append(helper.make_node("Clip", [probabilities, eps, one], [clipped],
                                       name=f"{prefix}_clip{tag}"))
    return clipped


def log_probabilities(graph: onnx.GraphProto, probabilities: str,
                      prefix: str = "qdq_onnx_loss", tag: str = "") -> str:
    """Append the log of the clipped `probabilities` to `graph`; returns it (named
    `{prefix}_logits{tag}`: softmax(log p) = p, so log-probabilities act as logits)."""
    clipped = clip_probabilities(graph, probabilities, prefix, tag)
    logits = f"{prefix}_logits{tag}"
    graph.node.append(helper.make_node("Log", [clipped], [logits], name=f"{prefix}_log{tag}"))
    return logits


def _classes_to_axis_1(model: onnx.ModelProto, output: str, rank: int, tag: str,
                       labels: str) -> str:
    """A channels-last output [N, ..., C] transposed to [N, C, ...], the layout
    SoftmaxCrossEntropyLoss takes for per-position classes, and its labels input [N, ...]
    (declared here: onnxruntime-training's block would drop the scores' last dimension)."""
    moved = f"qdq_onnx_loss_classes_first{tag}"
    model.graph.node.append(helper.make_node(
        "Transpose", [output], [moved], perm=[0, rank - 1, *range(1, rank - 1)],
        name=f"qdq_onnx_loss_transpose{tag}"))
    source = next(o for o in model.graph.output if o.name == output)
    dims = list(source.type.tensor_type.shape.dim)
    info = onnx.ValueInfoProto()
    info.CopyFrom(source)
    info.name = moved
    del info.type.tensor_type.shape.dim[:]
    info.type.tensor_type.shape.dim.extend([dims[0], dims[-1], *dims[1:-1]])
    model.graph.output.append(info)
    label = onnx.ValueInfoProto()
    label.CopyFrom(source)
    label.name = labels
    label.type.tensor_type.elem_type = onnx.TensorProto.INT64
    del label.type.tensor_type.shape.dim[-1]
    model.graph.input.append(label)
    # the block looks for an existing input among the nodes' inputs only
    model.graph.node.append(helper.make_node("Identity", [labels], [f"{labels}__seen"],
                                             name=f"qdq_onnx_loss_labels{tag}"))
    return moved
