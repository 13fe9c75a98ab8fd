"""The objective's total loss as standard ONNX ops appended to the training graph, for
backends that execute a graph rather than build one with onnxruntime-training's blocks (the
torch backend). It writes, op for op, what those blocks write (onnxruntime-training 1.19.2,
`onnxblock/loss/loss.py`): CrossEntropyLoss is SoftmaxCrossEntropyLoss with mean reduction,
BCEWithLogitsLoss is -(log(sigmoid(x)) * y + log(1 - sigmoid(x)) * (1 - y)) averaged, MSELoss
is the mean of (x - y)^2; KL distillation, the weights and the sum are `objective`'s own
nodes. The parity tests hold the two backends' losses equal."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.finetune.objective import Objective, OutputLoss, kl_nodes

_PREFIX = "qdq_onnx_lossg"


def _value_info(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto | None:
    g = model.graph
    return next((v for v in (*g.output, *g.value_info, *g.input) if v.name == name), None)


def _input_like(model: onnx.ModelProto, like: str, name: str, drop_last: bool = False,
                elem_type: int | None = None) -> None:
    """Declare graph input `name` shaped like tensor `like` (unless it exists)."""
    g = model.graph
    if any(i.name == name for i in g.input):
        return
    info = onnx.ValueInfoProto()
    source = _value_info(model, like)
    if source is not None:
        info.CopyFrom(source)
    else:
        info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    info.name = name
    if elem_type is not None:
        info.type.tensor_type.elem_type = elem_type
    if drop_last and info.type.tensor_type.HasField("shape") \
            and info.type.tensor_type.shape.dim:
        del info.type.tensor_type.shape.dim[-1]
    g.input.append(info)


def _const(model: onnx.ModelProto, name: str, value: float) -> str:
    model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def _mean(g: onnx.GraphProto, x: str, out: str) -> str:
    g.node.append(helper.make_node("ReduceMean", [x], [out], keepdims=0, name=out))
    return out


def _part_loss(model: onnx.ModelProto, p: OutputLoss, source: str, tag: str) -> str:
    """The loss of one part, reading tensor `source` (logits, or the output itself)."""
    g = model.graph
    if p.spec is None:
        _input_like(model, source, p.target)
        return kl_nodes(g, source, p.target, p.temperature, f"qdq_onnx_kl_{tag}",
                        p.probabilities)
    kind = p.kind
    if kind == "ce":
        _input_like(model, source, p.target, drop_last=True,
                    elem_type=onnx.TensorProto.INT64)
        out = f"{_PREFIX}{tag}_ce"
        g.node.append(helper.make_node("SoftmaxCrossEntropyLoss", [source, p.target],
                                       [out, f"{out}_log_prob"], reduction="mean", name=out))
        return out
    _input_like(model, source, p.target)
    t = f"{_PREFIX}{tag}"
    if kind == "mse":
        two = _const(model, f"{t}_two", 2.0)
        g.node.extend([helper.make_node("Sub", [source, p.target], [f"{t}_d"], name=f"{t}_d"),
                       helper.make_node("Pow", [f"{t}_d", two], [f"{t}_sq"], name=f"{t}_sq")])
        return _mean(g, f"{t}_sq", f"{t}_mse")
    one_a, one_b = _const(model, f"{t}_one_a", 1.0), _const(model, f"{t}_one_b", 1.0)
    g.node.extend([
        helper.make_node("Sigmoid", [source], [f"{t}_sig"], name=f"{t}_sig"),
        helper.make_node("Log", [f"{t}_sig"], [f"{t}_logsig"], name=f"{t}_logsig"),
        helper.make_node("Mul", [f"{t}_logsig", p.target], [f"{t}_pos"], name=f"{t}_pos"),
        helper.make_node("Sub", [one_a, f"{t}_sig"], [f"{t}_q"], name=f"{t}_q"),
        helper.make_node("Log", [f"{t}_q"], [f"{t}_logq"], name=f"{t}_logq"),
        helper.make_node("Sub", [one_b, p.target], [f"{t}_neg_y"], name=f"{t}_neg_y"),
        helper.make_node("Mul", [f"{t}_logq", f"{t}_neg_y"], [f"{t}_negs"], name=f"{t}_negs"),
        helper.make_node("Add", [f"{t}_pos", f"{t}_negs"], [f"{t}_sum"], name=f"{t}_sum"),
        helper.make_node("Neg", [f"{t}_sum"], [f"{t}_bce_all"], name=f"{t}_bce_all")])
    return _mean(g, f"{t}_bce_all", f"{t}_bce")


def append_loss(model: onnx.ModelProto, objective: Objective) -> str:
    """Append the objective's weighted total loss to `model` (changed in place), with its
    target inputs (labels, targets or teacher outputs by the objective's names); returns the
    loss tensor's name."""
    sources = objective.add_loss_inputs(model)
    parts = objective.parts
    total = None
    for i, (p, source) in enumerate(zip(parts, sources)):
        value = _part_loss(model, p, source, str(i))
        if len(parts) > 1 or p.weight != 1.0:
            w = _const(model, f"qdq_onnx_loss_{i}_weight", p.weight)
            weighted = f"qdq_onnx_loss_{i}_weighted"
            model.graph.node.append(helper.make_node("Mul", [value, w], [weighted],
                                                     name=weighted))
            value = weighted
        if total is None:
            total = value
        else:
            out = f"qdq_onnx_loss_sum_{i}"
            model.graph.node.append(helper.make_node("Add", [total, value], [out], name=out))
            total = out
    return total
