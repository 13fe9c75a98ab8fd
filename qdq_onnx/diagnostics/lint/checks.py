"""The lint checks, one function per entry of the rule file's `lint:` section, registered
under that entry's name. A check yields (node, message) pairs; the rule file gives each its
id and severity, and leaving an entry out of the rule file switches its check off."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from qdq_onnx.diagnostics.lint.context import LintContext
from qdq_onnx.files.onnx_files import MIN_OPSET, default_opset
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import Use

Hit = tuple[str, str]
Check = Callable[[LintContext], Iterator[Hit]]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    """Register a check under the name of its `lint:` entry in the rule file."""
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn
    return register


@check("weighted-data-not-quantized")
def data_not_quantized(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.weighted:
        if row["data"] is None:
            node = row["node"]
            yield node.name, f"{node.op_type} data input {node.input[0]!r} is float"


@check("weight-not-quantized")
def weight_not_quantized(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.weighted:
        if row["weight"] is None:
            yield row["node"].name, f"{row['node'].op_type} weight is float"


@check("wrong-weight-axis")
def wrong_weight_axis(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.weighted:
        if row["axis"] is not None and row["expected"] is not None \
                and row["axis"] != row["expected"]:
            node = row["node"]
            yield node.name, (f"weight axis {row['axis']}, expected {row['expected']} for "
                              f"{node.op_type}")


@check("nonzero-zero-point")
def nonzero_zero_point(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.qdq_nodes():
        zp = ctx.zero_point(node)
        if zp is not None and np.any(zp != 0):
            yield node.name, f"zero point {zp.reshape(-1)[:4].tolist()}"


@check("uint8-quantization")
def uint8_quantization(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.qdq_nodes():
        zp = ctx.zero_point(node)
        if zp is not None and zp.dtype == np.uint8:
            yield node.name, "uint8 zero point"


@check("per-channel-needs-opset-13")
def per_channel_opset(ctx: LintContext) -> Iterator[Hit]:
    opset = default_opset(ctx.model)
    if opset >= MIN_OPSET:
        return
    for node in ctx.qdq_nodes():
        if ctx.scale_count(node) > 1:
            yield node.name, f"opset {opset}"


@check("per-channel-activation")
def per_channel_activation(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.qdq_nodes():
        count = ctx.scale_count(node)
        if node.op_type == ops.QUANTIZE and count > 1 \
                and not ctx.index.is_constant(node.input[0]):
            yield node.name, f"activation {node.input[0]!r} has {count} scales"


@check("quantized-bias")
def quantized_bias(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.qdq_nodes():
        if node.op_type != ops.DEQUANTIZE:
            continue
        for use in ctx.index.consumers.get(node.output[0], ()):
            if ops.BIAS_INPUT.get(use.node.op_type) == use.index:
                yield use.node.name, "bias fed by DequantizeLinear"
    for node in ctx.index.nodes:  # a bias Add after a MatMul: a dequantized constant input
        if node.op_type not in ops.ADD_OPS:
            continue
        for t in node.input:
            found = ctx.dq(t) if t else None
            if found is not None and ctx.index.is_constant(found.source):
                yield node.name, f"bias {found.source!r} is quantized"


@check("rejected-quantized-op")
def rejected_quantized_op(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.index.nodes:
        if node.op_type in ops.INTEGER_OPS:
            yield node.name, f"{node.op_type} is not accepted by TensorRT"


def _is_skip_side(ctx: LintContext, use: Use) -> bool:
    """True if another input of this Add is an unquantized weighted branch (the one that
    fuses), so quantizing this input is what the residual rule asks for."""
    for i, t in enumerate(use.node.input):
        if i != use.index and t:
            weighted, quantized = ctx.branch(t)
            if weighted is not None and not quantized:
                return True
    return False


@check("qdq-on-weighted-output")
def qdq_on_weighted_output(ctx: LintContext) -> Iterator[Hit]:
    fused = ctx.fused_followers
    for row in ctx.weighted:
        node = row["node"]
        for use in ctx.index.consumers.get(node.output[0], ()):
            if use.node.op_type != ops.QUANTIZE:
                continue
            for dq_use in ctx.index.consumers.get(use.node.output[0], ()):
                readers = ctx.index.consumers.get(dq_use.node.output[0], ())
                if len({id(r.node) for r in readers}) > 1:
                    continue  # read by several ops: materialised anyway, no fusion to break
                for after in readers:
                    if after.node.op_type in ops.ADD_OPS and _is_skip_side(ctx, after):
                        continue  # the quantized skip input of a residual Add: intended
                    if after.node.op_type in fused:
                        yield node.name, (f"Q/DQ between {node.op_type} and "
                                          f"{after.node.op_type} {after.node.name!r}")


def _residual_branches(ctx: LintContext) -> Iterator[tuple]:
    """(Add node, live inputs, {input: (weighted node, quantized on the way)}) for every
    residual Add with at least one weighted branch."""
    for node in ctx.index.nodes:
        if node.op_type not in ops.ADD_OPS:
            continue
        if any(t and ctx.constant_behind(t) for t in node.input):
            continue  # a bias Add
        live = ctx.index.live_inputs(node)
        if len(live) < 2:
            continue
        branches = {i: ctx.branch(node.input[i]) for i in live}
        if any(b[0] is not None for b in branches.values()):
            yield node, live, branches


@check("residual-weighted-branch-quantized")
def residual_branch_quantized(ctx: LintContext) -> Iterator[Hit]:
    for node, live, branches in _residual_branches(ctx):
        weighted = [i for i in live if branches[i][0] is not None]
        if all(branches[i][1] for i in weighted):
            names = ", ".join(branches[i][0] for i in weighted)
            yield node.name, f"every weighted branch ({names}) is quantized before the Add"


@check("residual-skip-not-quantized")
def residual_skip_float(ctx: LintContext) -> Iterator[Hit]:
    for node, live, branches in _residual_branches(ctx):
        fused = [i for i in live if branches[i][0] is not None and not branches[i][1]]
        if not fused:
            continue
        for i in live:
            if i != fused[0] and ctx.dq(node.input[i]) is None:
                yield node.name, f"input {i} ({node.input[i]!r}) is float"


@check("requantization")
def requantization(ctx: LintContext) -> Iterator[Hit]:
    neutral = ctx.rules.precision_neutral
    for q in ctx.qdq_nodes():
        if q.op_type != ops.QUANTIZE:
            continue
        scale = ctx.index.constant_value(q.input[1])
        t, hops = q.input[0], 0
        while hops < 8:
            producer = ctx.index.producer.get(t)
            if producer is None:
                break
            if producer.op_type == ops.DEQUANTIZE:
                other = ctx.index.constant_value(producer.input[1])
                if hops and scale is not None and other is not None and (
                        scale.shape != other.shape or not np.array_equal(scale, other)):
                    yield q.name, (f"re-quantized after {hops} precision-neutral op(s) with "
                                   "a different scale")
                break
            live = ctx.index.live_inputs(producer)
            if producer.op_type not in neutral or not live:
                break
            t, hops = producer.input[live[0]], hops + 1


def _reaches_output(ctx: LintContext, tensor: str, max_hops: int = 8) -> bool:
    """Whether `tensor` flows to a graph output through precision-neutral ops only."""
    for _ in range(max_hops):
        if tensor in ctx.index.graph_outputs:
            return True
        readers = ctx.index.consumers.get(tensor, ())
        if len(readers) != 1 or readers[0].node.op_type not in ctx.rules.precision_neutral:
            return False
        tensor = readers[0].node.output[0]
    return False


@check("layout-transpose-after-weighted")
def layout_transpose_after_weighted(ctx: LintContext) -> Iterator[Hit]:
    fused = ctx.rules.fusible_followers
    for row in ctx.weighted:
        node, tensor = row["node"], row["node"].output[0]
        for _ in range(8):  # through the followers TensorRT would fuse into the op
            readers = ctx.index.consumers.get(tensor, ())
            if len(readers) != 1:
                break
            after = readers[0].node
            if after.op_type == "Transpose":
                if not _reaches_output(ctx, after.output[0]):
                    yield node.name, (f"Transpose {after.name!r} reads the output of "
                                      f"{node.op_type} (a layout shuffle inside the network)")
                break
            if after.op_type not in fused:
                break
            tensor = after.output[0]


@check("quantized-normalization-internals")
def quantized_normalization_internals(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.index.nodes:
        if node.op_type not in ("GlobalAveragePool", "ReduceMean") or not node.input:
            continue
        found = ctx.dq(node.input[0])
        if found is None:
            continue
        inputs = {node.input[0], found.source}
        for use in ctx.index.consumers.get(node.output[0], ()):
            if use.node.op_type == "Sub" and use.index == 1 and use.node.input[0] in inputs:
                yield node.name, (f"the mean {node.name!r} of a normalisation reads a "
                                  "quantized tensor")
                break


def _attention_products(ctx: LintContext, softmax) -> tuple | None:
    """(the MatMul of two activations before a Softmax, through scale/mask ops with one
    live input, and the one reading the Softmax output), or None."""
    tensor = softmax.input[0]
    before = None
    for _ in range(6):
        found = ctx.dq(tensor)
        node = ctx.index.producer.get(found.source if found else tensor)
        if node is None:
            return None
        if node.op_type == ops.MATMUL:
            before = node
            break
        live = ctx.index.live_inputs(node)
        if node.op_type not in ("Mul", "Div", "Add", "Sub", "Where") or len(live) != 1:
            return None
        tensor = node.input[live[0]]
    after = None
    for use in ctx.index.consumers.get(softmax.output[0], ()):
        node = use.node
        if node.op_type == ops.QUANTIZE:  # through its Q/DQ pair
            dq = next(iter(ctx.index.consumers.get(node.output[0], ())), None)
            uses = ctx.index.consumers.get(dq.node.output[0], ()) if dq else ()
            node = uses[0].node if uses else None
        if node is not None and node.op_type == ops.MATMUL:
            after = node
    if before is None or after is None:
        return None
    return before, after


@check("incomplete-mha-qdq")
def incomplete_mha_qdq(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.index.nodes:
        if node.op_type != "Softmax":
            continue
        found = _attention_products(ctx, node)
        if found is None:
            continue
        inputs = [(m, t) for m in found for t in m.input[:2]]
        quantized = [ctx.dq(t) is not None for _, t in inputs]
        if any(quantized) and not all(quantized):
            missing = [f"{m.name}[{list(m.input).index(t)}]" for (m, t), q in zip(inputs, quantized)
                       if not q]
            yield node.name, (f"attention around {node.name!r}: {', '.join(missing)} float "
                              "while the other product inputs are quantized")
