"""The torch backend's op table, part 1: element-wise math, activations, comparisons,
reductions and matrix products, one function per ONNX op (torch_ops_shape.py moves data,
torch_ops_nn.py holds convolutions, pooling, normalisation, Resize and recurrences).

Each function takes the op context, the node's attributes (a dict of Python values) and
its inputs (torch tensors, None for an omitted optional input) and returns its output or a
tuple of outputs. They follow the ONNX operator definitions (opset 7-21), computing in the
input's dtype as onnxruntime does, so that autograd differentiates exactly the graph the
default backend trains. `OPS` maps op type to function (`torch_graph.coverage()` lists
every op)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from qdq_onnx.graph import ops

OpFn = Callable[..., Any]
OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    """Register the decorated function for the ONNX ops `names`."""
    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn
    return register


def aligned(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors on one device: small integer tensors (shapes, indices) live on the CPU
    so that shape arithmetic never waits for the GPU; they move to the other operand's."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) <= 1:
        return list(tensors)
    target = next(d for d in devices if d.type != "cpu")
    return [None if t is None else t.to(target) for t in tensors]


def ints(t: torch.Tensor | None) -> list[int]:
    """A 0-d/1-d integer tensor (shape arithmetic) as Python ints."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _float(t: torch.Tensor) -> bool:
    return t.is_floating_point()


# -- element-wise ----------------------------------------------------------------------
def _binary(fn: Callable) -> OpFn:
    def run(ctx, attrs, a, b):
        a, b = aligned(a, b)
        return fn(a, b)
    return run


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if _float(a):
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if _float(a) and not _float(b):
        b = b.to(a.dtype)
    if _float(a) and b.numel() == 1 and not b.requires_grad:
        return torch.pow(a, float(b.reshape(()).item()))  # a Python exponent: x**2 stays cheap
    return torch.pow(a, b).to(a.dtype)


for _name, _fn in {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div,
                   "Pow": _pow, "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt,
                   "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge,
                   "And": torch.logical_and, "Or": torch.logical_or,
                   "Xor": torch.logical_xor}.items():
    OPS[_name] = _binary(_fn)


@op("Mod")
def mod(ctx, attrs, a, b):
    a, b = aligned(a, b)
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)


def _unary(fn: Callable) -> OpFn:
    return lambda ctx, attrs, x: fn(x)


for _name, _fn in {"Neg": torch.neg, "Abs": torch.abs, "Exp": torch.exp, "Log": torch.log,
                   "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Tanh": torch.tanh,
                   "Sigmoid": torch.sigmoid, "Relu": torch.relu, "Erf": torch.erf,
                   "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
                   "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan,
                   "Not": torch.logical_not, "IsNaN": torch.isnan, "Softsign": F.softsign,
                   "Softplus": F.softplus, "Atan": torch.atan, "Asin": torch.asin,
                   "Acos": torch.acos, "Sinh": torch.sinh, "Cosh": torch.cosh,
                   "Mish": F.mish}.items():
    OPS[_name] = _unary(_fn)


@op("Identity", "Dropout")
def identity(ctx, attrs, x, *rest):
    return x  # Dropout: the training graph runs it in inference mode (ratio unused)


@op("IsInf")
def is_inf(ctx, attrs, x):
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    return (torch.isposinf(x) & bool(pos)) | (torch.isneginf(x) & bool(neg))


@op("LeakyRelu")
def leaky_relu(ctx, attrs, x):
    return F.leaky_relu(x, attrs.get("alpha", 0.01))


@op("Elu")
def elu(ctx, attrs, x):
    return F.elu(x, attrs.get("alpha", 1.0))


@op("Celu")
def celu(ctx, attrs, x):
    return F.celu(x, attrs.get("alpha", 1.0))


@op("Selu")
def selu(ctx, attrs, x):
    alpha, gamma = attrs.get("alpha", 1.67326319217681884765625), attrs.get(
        "gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("ThresholdedRelu")
def thresholded_relu(ctx, attrs, x):
    return torch.where(x > attrs.get("alpha", 1.0), x, torch.zeros_like(x))


@op("HardSigmoid")
def hard_sigmoid(ctx, attrs, x):
    return torch.clamp(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def hard_swish(ctx, attrs, x):
    return x * torch.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)  # ONNX: alpha * x + beta


@op("PRelu")
def prelu(ctx, attrs, x, slope):
    x, slope = aligned(x, slope)
    return torch.where(x < 0, slope * x, x)


@op("Gelu")
def gelu(ctx, attrs, x):
    return F.gelu(x, approximate=attrs.get("approximate", "none"))


@op("Clip")
def clip(ctx, attrs, x, low=None, high=None):
    if ctx.opset < 11:
        low = attrs.get("min", -math.inf)
        high = attrs.get("max", math.inf)
        return torch.clamp(x, low, high)
    x, low, high = aligned(x, low, high)
    return torch.clamp(x, low, high)


@op("Where")
def where(ctx, attrs, cond, a, b):
    cond, a, b = aligned(cond, a, b)
    return torch.where(cond, a, b)


def _variadic(fn: Callable) -> OpFn:
    def run(ctx, attrs, *xs):
        xs = aligned(*xs)
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return run


OPS["Max"] = _variadic(torch.maximum)
OPS["Min"] = _variadic(torch.minimum)
OPS["Sum"] = _variadic(torch.add)


@op("Mean")
def mean(ctx, attrs, *xs):
    return OPS["Sum"](ctx, attrs, *xs) / len(xs)


@op("Cast")
def cast(ctx, attrs, x):
    return x.to(ctx.dtype(attrs["to"]))


@op("CastLike")
def cast_like(ctx, attrs, x, like):
    return x.to(like.dtype)


# -- softmax and reductions ------------------------------------------------------------
def _flattened(x: torch.Tensor, axis: int, fn: Callable) -> torch.Tensor:
    """Opset < 13 Softmax/LogSoftmax: over the 2-D [prod(:axis), prod(axis:)] view."""
    axis %= max(x.dim(), 1)
    lead = math.prod(x.shape[:axis])
    return fn(x.reshape(lead, -1), -1).reshape(x.shape)


@op("Softmax")
def softmax(ctx, attrs, x):
    if ctx.opset < 13:
        return _flattened(x, attrs.get("axis", 1), torch.softmax)
    return torch.softmax(x, attrs.get("axis", -1))


@op("LogSoftmax")
def log_softmax(ctx, attrs, x):
    if ctx.opset < 13:
        return _flattened(x, attrs.get("axis", 1), torch.log_softmax)
    return torch.log_softmax(x, attrs.get("axis", -1))


def reduce_axes(ctx, attrs, x: torch.Tensor, axes_in: torch.Tensor | None, op_type: str
                ) -> list[int] | None:
    """The axes a Reduce* node reduces (None: every axis, or none with noop_with_empty_axes).
    ReduceSum takes them as an input from opset 13, the others from opset 18."""
    from_input = ctx.opset >= (13 if op_type == "ReduceSum" else 18)
    axes = ints(axes_in) if from_input else list(attrs.get("axes", []))
    if not axes:
        return [] if attrs.get("noop_with_empty_axes", 0) else None
    return [a % max(x.dim(), 1) for a in axes]


def _reduction(fn: Callable, op_type: str) -> OpFn:
    def run(ctx, attrs, x, axes_in=None):
        axes = reduce_axes(ctx, attrs, x, axes_in, op_type)
        keep = bool(attrs.get("keepdims", 1))
        if axes == []:
            return x
        if axes is None:
            axes = list(range(x.dim()))
        if not axes:  # a scalar
            return fn(x, None, keep)
        return fn(x, axes, keep).to(x.dtype)  # torch sums integers as int64; ONNX keeps the type
    return run


def _sum(x, axes, keep):
    return torch.sum(x, dim=axes, keepdim=keep) if axes is not None else x


def _amax(x, axes, keep):
    return torch.amax(x, dim=axes, keepdim=keep) if axes else x


def _amin(x, axes, keep):
    return torch.amin(x, dim=axes, keepdim=keep) if axes else x


def _prod(x, axes, keep):
    for a in sorted(axes or [], reverse=True):
        x = torch.prod(x, dim=a, keepdim=keep)
    return x


REDUCERS = {
    "ReduceSum": _sum,
    "ReduceMean": lambda x, a, k: torch.mean(x, dim=a, keepdim=k) if a else x,
    "ReduceMax": _amax,
    "ReduceMin": _amin,
    "ReduceProd": _prod,
    "ReduceSumSquare": lambda x, a, k: _sum(x * x, a, k),
    "ReduceL1": lambda x, a, k: _sum(torch.abs(x), a, k),
    "ReduceL2": lambda x, a, k: torch.sqrt(_sum(x * x, a, k)),
    "ReduceLogSum": lambda x, a, k: torch.log(_sum(x, a, k)),
    "ReduceLogSumExp": lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k) if a else x,
}
for _name, _fn in REDUCERS.items():
    OPS[_name] = _reduction(_fn, _name)


def _arg(fn: Callable) -> OpFn:
    def run(ctx, attrs, x):
        axis = attrs.get("axis", 0) % max(x.dim(), 1)
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            flipped = torch.flip(x, [axis])
            idx = fn(flipped, dim=axis, keepdim=keep)
            return (x.shape[axis] - 1 - idx).to(torch.int64)
        return fn(x, dim=axis, keepdim=keep).to(torch.int64)
    return run


OPS["ArgMax"] = _arg(torch.argmax)
OPS["ArgMin"] = _arg(torch.argmin)


@op("CumSum")
def cumsum(ctx, attrs, x, axis):
    a = ints(axis)[0] % x.dim()
    if attrs.get("reverse", 0):
        x = torch.flip(x, [a])
    y = torch.cumsum(x, a)
    if attrs.get("exclusive", 0):
        y = y - x
    return torch.flip(y, [a]) if attrs.get("reverse", 0) else y


# -- matrix products -------------------------------------------------------------------
@op(ops.MATMUL)
def matmul(ctx, attrs, a, b):
    a, b = aligned(a, b)
    return torch.matmul(a, b)


@op(ops.GEMM)
def gemm(ctx, attrs, a, b, c=None):
    a, b, c = aligned(a, b, c)
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = torch.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return y


@op("Einsum")
def einsum(ctx, attrs, *xs):
    return torch.einsum(attrs["equation"], *aligned(*xs))
