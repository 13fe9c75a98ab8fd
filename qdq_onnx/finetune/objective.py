"""What fine-tuning minimises: one loss per model output (by output name or in output
order), weighted and summed, against labels or, for self-distillation, against the float
model's own outputs (MSE, or KL divergence of the softened logits with a temperature; of
the log-probabilities where the model outputs probabilities).

The total is one onnxruntime-training loss block. A single output with a label loss builds
the same graph as the plain loss block, with the label input named `labels` (class
indices) or `target` (values)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.errors import QdqError, SettingError
from qdq_onnx.finetune.losses import LossSpec, log_probabilities
from qdq_onnx.graph.index import GraphIndex

DISTILL_LOSSES = ("mse", "kl")


class Targets(dict):
    """Targets already prepared, by the backend's input name (a validation split's)."""


@dataclass(frozen=True)
class OutputLoss:
    """The loss of one model output: its kind, weight, and the training input it is
    compared with (labels, or the float model's output when distilling)."""

    output: str
    spec: LossSpec | None  # None: distillation by KL divergence
    weight: float
    target: str
    shape: tuple
    distill: bool = False
    temperature: float = 1.0
    probabilities: bool = False  # KL: the output is probabilities, not logits

    @property
    def kind(self) -> str:
        return "kl" if self.spec is None else self.spec.kind


def _by_output(value: Any, outputs: list[str], what: str) -> dict[str, Any]:
    """A per-output setting (one value for all, a list in output order, or a dict by
    output name) as a dict by output name."""
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in outputs]
        if unknown:
            raise SettingError(what, f"names {unknown}, which are not outputs of the model "
                                     f"(its outputs: {outputs})")
        return dict(value)
    if isinstance(value, (list, tuple)):
        if len(value) != len(outputs):
            raise SettingError(what, f"gives {len(value)} values for the model's "
                                     f"{len(outputs)} outputs {outputs}")
        return dict(zip(outputs, value))
    return dict.fromkeys(outputs, value)


def _input_name(prefix: str, output: str) -> str:
    return f"{prefix}__{re.sub(r'[^A-Za-z0-9_]', '_', output)}"


def softmax_outputs(model: onnx.ModelProto) -> set[str]:
    """The graph outputs a Softmax over the last axis produces (through Identity ops):
    probabilities, whatever the from_logits setting says."""
    producer = GraphIndex(model.graph).producer
    found = set()
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type == "Identity":
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Softmax":
            continue
        rank = len(out.type.tensor_type.shape.dim)
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if axis == -1 or (rank and axis == rank - 1):  # opset >= 13 defaults to -1
            found.add(out.name)
    return found


def output_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Each graph output's shape (-1 where unknown)."""
    return {o.name: tuple(d.dim_value if d.HasField("dim_value") else -1
                          for d in o.type.tensor_type.shape.dim) for o in model.graph.output}


class Objective:
    """The weighted per-output losses of one fine-tuning run."""

    def __init__(self, parts: list[OutputLoss]) -> None:
        if not parts:
            raise SettingError("loss", "names no output to train on")
        self.parts = parts

    @classmethod
    def from_config(cls, config: Any, model: onnx.ModelProto) -> Objective:
        """The objective `config` (a TrainConfig) asks for on the outputs of `model`."""
        shapes = output_shapes(model)
        outputs = list(shapes)
        weights = _by_output(1.0 if config.loss_weights is None else config.loss_weights,
                             outputs, "loss_weights")
        if config.distill:
            kinds = _by_output(config.distill_loss, outputs, "distill_loss")
            softmax = softmax_outputs(model)
            parts = [OutputLoss(o, None if kinds[o] == "kl" else LossSpec("mse"),
                                float(weights.get(o, 1.0)), _input_name("teacher", o),
                                shapes[o], True, float(config.temperature),
                                not config.from_logits or o in softmax)
                     for o in outputs if o in kinds]
            return cls(parts)
        losses = _by_output(config.loss, outputs, "loss")
        single = len(losses) == 1
        parts = []
        for o in outputs:
            if o not in losses or losses[o] is None:
                continue  # Keras: an output without a loss is not trained on
            spec = LossSpec(losses[o], config.from_logits)
            prefix = "labels" if spec.kind == "ce" else "target"
            parts.append(OutputLoss(o, spec, float(weights.get(o, 1.0)),
                                    prefix if single else _input_name(prefix, o), shapes[o]))
        return cls(parts)

    @property
    def distill(self) -> bool:
        return self.parts[0].distill

    # -- the loss graph ------------------------------------------------------------------
    def add_loss_inputs(self, model: onnx.ModelProto) -> list[str]:
        """The tensor each part's loss reads (probabilities turned into logits where the
        loss block needs them), added to `model`."""
        return [p.output if p.spec is None else
                p.spec.add_loss_input(model, p.output, tag="" if i == 0 else f"_{i}",
                                      labels=p.target)
                for i, p in enumerate(self.parts)]

    def block(self, onnxblock: Any) -> Any:
        """The onnxruntime-training loss block computing the weighted total."""
        return _total_block(onnxblock, self.parts)

    # -- targets -------------------------------------------------------------------------
    def labels(self, y: Any, source: str) -> dict[str, np.ndarray]:
        """Labels by target input, from `y`: one array (a single output), a list in output
        order, or a dict by output name."""
        if self.distill:
            raise QdqError(f"{source}: distillation takes no labels")
        if len(self.parts) == 1 and not isinstance(y, Mapping):
            p = self.parts[0]
            return {p.target: p.spec.labels(y, p.shape, source)}
        if isinstance(y, (list, tuple)) and not isinstance(y, Mapping):
            outputs = [p.output for p in self.parts]
            if len(y) != len(outputs):
                raise QdqError(f"{source}: {len(y)} label arrays for the {len(outputs)} "
                               f"outputs trained on {outputs}")
            y = dict(zip(outputs, y))
        if not isinstance(y, Mapping):
            raise QdqError(f"{source}: the model trains {len(self.parts)} outputs; give "
                           "labels as a dict by output name or a list in output order")
        missing = [p.output for p in self.parts if p.output not in y]
        if missing:
            raise QdqError(f"{source}: no labels for output(s) {missing}")
        return {p.target: p.spec.labels(y[p.output], p.shape, f"{source} {p.output!r}")
                for p in self.parts}

    def dummy(self, n: int) -> dict[str, np.ndarray]:
        """Placeholder targets for running the eval graph where only outputs matter."""
        out = {}
        for p in self.parts:
            if p.kind == "ce":  # class indices, per position for a segmentation
                out[p.target] = np.zeros((n, *[max(d, 1) for d in p.shape[1:-1]]), np.int64)
            else:
                out[p.target] = np.zeros((n, *[max(d, 1) for d in p.shape[1:]]), np.float32)
        return out

    def correct(self, outputs: dict[str, np.ndarray], targets: dict[str, np.ndarray]
                ) -> dict[str, tuple[int, int]]:
        """(correct, counted) per output whose accuracy is defined (label losses)."""
        out = {}
        for p in self.parts:
            if p.spec is not None and not p.distill and p.output in outputs:
                c = p.spec.correct(outputs[p.output], targets[p.target])
                if c is not None:
                    out[p.output] = c
        return out


def _scalar(graph: onnx.GraphProto, name: str, value: float) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def kl_nodes(g: onnx.GraphProto, student: str, teacher: str, temperature: float, tag: str,
             probabilities: bool = False) -> str:
    """Append T^2 * mean over samples (and positions) of KL(softmax(teacher/T) ||
    softmax(student/T)) over the last axis (the class axis of a channels-last Keras model)
    to `g`; returns the loss tensor. Of probabilities p, the logits are log p (clipped):
    softmax(log(p)/T). Both training backends' loss graphs are built by this function."""
    classes = next((o.type.tensor_type.shape.dim[-1].dim_value for o in g.output
                    if o.name == student), 0)
    if not classes:
        raise QdqError(f"distillation by KL needs the class count of output "
                       f"{student!r} (its last dimension); use distill_loss='mse'")
    t = tag
    temp = _scalar(g, f"{t}_temperature", temperature)
    factor = _scalar(g, f"{t}_factor", temperature ** 2 * classes)
    if probabilities:  # softmax of probabilities would flatten them
        student = log_probabilities(g, student, f"{t}_student")
        teacher = log_probabilities(g, teacher, f"{t}_teacher")
    g.node.extend([
        helper.make_node("Div", [student, temp], [f"{t}_s"], name=f"{t}_s"),
        helper.make_node("Div", [teacher, temp], [f"{t}_t"], name=f"{t}_t"),
        helper.make_node("LogSoftmax", [f"{t}_s"], [f"{t}_logq"], axis=-1, name=f"{t}_logq"),
        helper.make_node("LogSoftmax", [f"{t}_t"], [f"{t}_logp"], axis=-1, name=f"{t}_logp"),
        helper.make_node("Softmax", [f"{t}_t"], [f"{t}_p"], axis=-1, name=f"{t}_p"),
        helper.make_node("Sub", [f"{t}_logp", f"{t}_logq"], [f"{t}_d"], name=f"{t}_d"),
        helper.make_node("Mul", [f"{t}_p", f"{t}_d"], [f"{t}_pd"], name=f"{t}_pd"),
        # the mean over every element times the class count: the mean over
        # samples of each sample's sum over classes
        helper.make_node("ReduceMean", [f"{t}_pd"], [f"{t}_mean"], keepdims=0,
                         name=f"{t}_mean"),
        helper.make_node("Mul", [f"{t}_mean", factor], [f"{t}_kl"], name=f"{t}_kl")])
    return f"{t}_kl"


def _kl_block(onnxblock: Any, temperature: float, tag: str, probabilities: bool = False
              ) -> Any:
    """The KL-divergence distillation loss block (onnxblock is imported lazily)."""

    class KLDivergence(onnxblock.Block):
        """`kl_nodes` as an onnxruntime-training block."""

        def __init__(self, temperature: float, tag: str, probabilities: bool) -> None:
            super().__init__()
            self.temperature, self.tag = temperature, tag
            self.probabilities = probabilities

        def build(self, student: str, teacher: str) -> str:
            if not onnxblock._graph_utils.node_arg_exists(self.base, teacher):
                teacher = onnxblock.blocks.InputLike(student)(teacher)
            return kl_nodes(self.base.graph, student, teacher, self.temperature, self.tag,
                            self.probabilities)

    return KLDivergence(temperature, tag, probabilities)


def _weighted_block(onnxblock: Any, weight: float, tag: str) -> Any:
    """A block multiplying a loss by its weight."""

    class Weighted(onnxblock.Block):
        def __init__(self, weight: float, tag: str) -> None:
            super().__init__()
            self.weight, self.tag = weight, tag

        def build(self, loss: str) -> str:
            w = _scalar(self.base.graph, f"{self.tag}_weight", self.weight)
            out = f"{self.tag}_weighted"
            self.base.graph.node.append(helper.make_node("Mul", [loss, w], [out],
                                                         name=out))
            return out

    return Weighted(weight, tag)


def _total_block(onnxblock: Any, parts: list[OutputLoss]) -> Any:
    """A Block summing each part's loss times its weight (the plain loss block when there
    is one part of weight 1)."""

    class Total(onnxblock.Block):
        def __init__(self) -> None:
            super().__init__()
            self.losses = [_kl_block(onnxblock, p.temperature, f"qdq_onnx_kl_{i}",
                                     p.probabilities)
                           if p.spec is None
                           else p.spec.block(onnxblock) for i, p in enumerate(parts)]
            self.weights = [_weighted_block(onnxblock, p.weight, f"qdq_onnx_loss_{i}")
                            for i, p in enumerate(parts)]

        def build(self, *loss_inputs: str) -> str:
            total = None
            for i, (p, loss, name) in enumerate(zip(parts, self.losses, loss_inputs)):
                value = loss(name, p.target)
                if len(parts) > 1 or p.weight != 1.0:
                    value = self.weights[i](value)
                if total is None:
                    total = value
                else:
                    out = f"qdq_onnx_loss_sum_{i}"
                    self.base.graph.node.append(helper.make_node("Add", [total, value], [out],
                                                                 name=out))
                    total = out
            return total

    return Total()
