"""The lint checks, one function per entry of the rule file's `lint:` section, registered
under that entry's name. A check yields (node, message) pairs; the rule file gives each its
id and severity, and leaving an entry out of the rule file switches its check off."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx

from qdq_onnx.diagnostics.lint.context import LintContext
from qdq_onnx.files.onnx_files import MIN_OPSET, default_opset
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import Use
from qdq_onnx.placement.patterns.attention import DEFAULTS, outside_limits
from qdq_onnx.placement.patterns.attention import KIND as ATTENTION

Hit = tuple[str, str]
Check = Callable[[LintContext], Iterator[Hit]]
CHECKS: dict[str, Check] = {}
# Checks of the float remainder's types: run only for a strongly typed build.
STRONG_TYPING_CHECKS: set[str] = set()


def check(name: str, strong_typing: bool = False) -> Callable[[Check], Check]:
    """Register a check under the name of its `lint:` entry in the rule file
    (`strong_typing`: only for `lint --typing strong`)."""
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        if strong_typing:
            STRONG_TYPING_CHECKS.add(name)
        return fn
    return register


@check("weighted-data-not-quantized")
def data_not_quantized(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.weighted:
        if row["data"] is None and not ctx.float_by_plan_at(row["node"].name, 0):
            node = row["node"]
            yield node.name, f"{node.op_type} data input {node.input[0]!r} is float"


@check("weight-not-quantized")
def weight_not_quantized(ctx: LintContext) -> Iterator[Hit]:
    for row in ctx.weighted:
        if row["weight"] is None and not ctx.float_by_plan_at(row["node"].name, 1):
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
    """A quantized type no scheme of the rule file has (uint8 from onnxruntime's defaults)."""
    accepted = ctx.accepted_zero_point_types
    for node in ctx.qdq_nodes():
        elem = ctx.zero_point_type(node)
        if elem == onnx.TensorProto.INT32:
            continue  # an int32-quantized bias: quantized-bias reports it
        if elem is not None and elem not in accepted:
            names = ", ".join(sorted(onnx.TensorProto.DataType.Name(t).lower()
                                     for t in accepted))
            yield node.name, (f"{onnx.TensorProto.DataType.Name(elem).lower()} zero point "
                              f"(TensorRT quantizes to {names})")


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


_TRANSPOSE = frozenset({"Transpose"})  # moves data; a Reshape of leading dims does not


@check("residual-behind-layout-op")
def residual_behind_layout(ctx: LintContext) -> Iterator[Hit]:
    for node in ctx.index.nodes:
        live = ctx.index.live_inputs(node) if node.op_type in ops.ADD_OPS else []
        if len(live) < 2 or not all(ctx.dq(node.input[i]) for i in live):
            continue
        for i in live:
            path = ctx.branch_path(node.input[i], also_through=_TRANSPOSE)
            hidden = [n.name for n in path if n.op_type == "Transpose"]
            if hidden:  # a weighted branch that only the Transpose keeps from fusing
                yield node.name, (f"input {i} comes from {path[-1].name!r} through the layout "
                                  f"op {hidden[0]!r}: both inputs are quantized and TensorRT "
                                  "cannot fuse the Add into the weighted op")
                break


@check("residual-skip-not-quantized")
def residual_skip_float(ctx: LintContext) -> Iterator[Hit]:
    for node, live, branches in _residual_branches(ctx):
        fused = [i for i in live if branches[i][0] is not None and not branches[i][1]]
        if not fused or node.name in ctx.float_by_plan:
            continue  # (the accuracy guard may leave an Add's skip float, and records it)
        for i in live:
            if i != fused[0] and ctx.dq(node.input[i]) is None:
                yield node.name, f"input {i} ({node.input[i]!r}) is float"


@check("requantization")
def requantization(ctx: LintContext) -> Iterator[Hit]:
    def dequantized(t: str) -> bool:
        producer = ctx.index.producer.get(t)
        return producer is not None and producer.op_type == ops.DEQUANTIZE

    for q in ctx.qdq_nodes():
        if q.op_type != ops.QUANTIZE or dequantized(q.input[0]):
            continue
        scale = ctx.index.constant_value(q.input[1])
        found = ctx.index.neutral_sources(q.input[0], ctx.rules.precision_neutral,
                                          dequantized, max_hops=8)
        for t, hops in found or ():
            other = ctx.index.constant_value(ctx.index.producer[t].input[1])
            if scale is not None and other is not None and (
                    scale.shape != other.shape or not np.array_equal(scale, other)):
                yield q.name, (f"re-quantized after {hops} precision-neutral op(s) with "
                               "a different scale")
                break


def _reaches_output(ctx: LintContext, tensor: str, max_hops: int = 8) -> bool:
    """Whether `tensor` flows to a graph output, each tensor read once, through ops that are
    neither weighted nor fused into one (Reshape, Flatten, a classifier's Softmax): the
    layout change of the model's output, with no INT8 layer or fusion behind it."""
    stop = ctx.weighted_ops | ctx.rules.fusible_followers | ops.QDQ_OPS
    for _ in range(max_hops):
        if tensor in ctx.index.graph_outputs:
            return True
        readers = ctx.index.consumers.get(tensor, ())
        if len(readers) != 1 or readers[0].node.op_type in stop:
            return False
        tensor = readers[0].node.output[0]
    return False


def _tokens(ctx: LintContext, transposes: list[onnx.NodeProto]) -> set[str]:
    """The Transposes whose only reader is a Reshape to rank 3: feature maps turned into
    tokens (a patch embedding), the model's own layout change, not a removable shuffle."""
    reshapes = {}
    for t in transposes:
        readers = ctx.index.consumers.get(t.output[0], ())
        if len(readers) == 1 and readers[0].node.op_type == "Reshape":
            reshapes[t.name] = readers[0].node.output[0]
    ranks = ctx.shapes_of(sorted(set(reshapes.values())))
    return {name for name, out in reshapes.items() if len(ranks.get(out) or ()) == 3}


def _quantized_through_layout(ctx: LintContext, tensor: str, max_hops: int = 8) -> bool:
    """Whether every reader of `tensor`'s values is a QuantizeLinear, directly or through
    layout ops the rule file's taxonomy makes precision neutral (Transpose, Reshape, ...;
    a Shape reads no values): TensorRT moves that Q backwards through them onto `tensor`."""
    through = ops.LAYOUT_OPS & ctx.rules.precision_neutral
    frontier = [tensor]
    for _ in range(max_hops):
        nxt = []
        for t in frontier:
            readers = [u for u in ctx.index.consumers.get(t, ()) if u.node.op_type != "Shape"]
            if not readers or t in ctx.index.graph_outputs:
                return False
            for use in readers:
                if use.node.op_type in through and use.index == 0:
                    nxt.append(use.node.output[0])
                elif use.node.op_type != ops.QUANTIZE:
                    return False
        if not nxt:
            return True
        frontier = nxt
    return False


def _product_of_activations(ctx: LintContext, node: onnx.NodeProto) -> bool:
    """A MatMul of two activations (an attention's Q x K^T or softmax x V): its output has
    no follower TensorRT fuses into it, and the layout around it is the heads'."""
    return node.op_type == ops.MATMUL and not ctx.constant_behind(node.input[1])


@check("layout-transpose-after-weighted")
def layout_transpose_after_weighted(ctx: LintContext) -> Iterator[Hit]:
    fused = ctx.rules.fusible_followers
    found = []
    for row in ctx.weighted:
        node, tensor = row["node"], row["node"].output[0]
        for _ in range(8):  # through the followers TensorRT would fuse into the op
            readers = ctx.index.consumers.get(tensor, ())
            if len(readers) != 1:
                break
            after = readers[0].node
            if after.op_type == "Transpose":
                if not _reaches_output(ctx, after.output[0]):
                    found.append((node, after))
                break
            if after.op_type not in fused:
                break
            tensor = after.output[0]
    tokens = _tokens(ctx, [after for _, after in found]) if found else set()
    for node, after in found:
        if after.name in tokens:
            continue
        if _product_of_activations(ctx, node):
            # The heads merged back ([N, H, S, D] -> [N, S, H, D], then a Reshape): the
            # multi-head layout TensorRT's MHA fusion takes, with the "Q/DQ after BMM2" it
            # needs when a Q follows through layout ops (TensorRT moves it onto the product).
            if not _quantized_through_layout(ctx, after.output[0]):
                yield node.name, (f"Transpose {after.name!r} reads the output of the "
                                  f"attention product {node.name!r}, which reaches its "
                                  "reader float: TensorRT's INT8 fused MHA needs Q/DQ after "
                                  "the second product (after its layout ops)")
            continue
        yield node.name, (f"Transpose {after.name!r} reads the output of "
                          f"{node.op_type} (a layout shuffle inside the network)")


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


@check("incomplete-mha-qdq")
def incomplete_mha_qdq(ctx: LintContext) -> Iterator[Hit]:
    for node, *found in ctx.attentions:
        inputs = [(m, t) for m in found for t in m.input[:2]]
        quantized = [ctx.dq(t) is not None for _, t in inputs]
        if any(quantized) and not all(quantized):
            missing = [f"{m.name}[{list(m.input).index(t)}]" for (m, t), q in zip(inputs, quantized)
                       if not q]
            yield node.name, (f"attention around {node.name!r}: {', '.join(missing)} float "
                              "while the other product inputs are quantized")


def _mha_limits(ctx: LintContext) -> dict:
    """TensorRT's fused MHA limits: the rule file's attention pattern options (the ones
    placement keeps attention float by), its declared defaults where the file has none."""
    rule = ctx.rules.patterns.get(ATTENTION.name)
    return rule.options if rule is not None else DEFAULTS


@check("mha-outside-fused-int8-limits")
def mha_outside_fused_limits(ctx: LintContext) -> Iterator[Hit]:
    quantized = [(node, ctx.dq(bmm1.input[0]), bmm1.output[0])
                 for node, bmm1, bmm2 in ctx.attentions
                 if all(ctx.dq(t) for m in (bmm1, bmm2) for t in m.input[:2])]
    shapes = ctx.shapes_of([t for _, q_in, scores in quantized for t in (q_in.source, scores)])
    for node, q_in, scores in quantized:
        head = (shapes.get(q_in.source) or [None])[-1]  # BMM1 contracts over the head size
        seqs = [d for d in (shapes.get(scores) or [])[-2:] if d is not None]
        scheme = ctx.scheme_of(q_in.dq).split("-")[0]
        problems = outside_limits(_mha_limits(ctx), scheme, head, max(seqs) if seqs else None)
        if problems:
            yield node.name, (f"attention around {node.name!r}: {' and '.join(problems)}; "
                              f"TensorRT runs its {scheme.upper()} products as separate "
                              "kernels")
