"""Layout pass: move the NHWC<->NCHW Transposes that tf2onnx leaves around weighted ops to the
graph's edges, so that nothing sits between a Conv and the ops TensorRT fuses with it.

tf2onnx wraps every Conv of a channels-last Keras model in a pair of Transposes and relies on
its own transpose optimizer to cancel them; on some models (MobileNetV3: 106 Transposes
around 54 Convs) that optimizer fails and the pairs survive. onnxruntime's graph
optimizer has a maintained transpose optimizer (push a Transpose through elementwise,
Pad, Reduce and Concat ops, cancel inverse pairs, permute constants) that does the job: it
is run alone, on level 1, with every fusion and constant folding off, and its result is kept
only if it used standard ops and changed nothing but Transposes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx

from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex

# Level-1 rewrites of onnxruntime other than its transpose optimizer: each changes more than
# layout (weights, node kinds or names the layer map and the placement rely on). Unknown
# names are ignored by onnxruntime, and a result that changed more than Transposes is
# refused anyway (`_rejected`).
_OTHER_LEVEL1 = ["ConstantFolding", "ConstantSharing", "CommonSubexpressionElimination",
                 "ConvAddFusion", "ConvMulFusion", "ConvBNFusion", "MatMulAddFusion",
                 "GemmTransposeFusion", "DivMulFusion", "FuseReluClip", "NotWhereFusion",
                 "ReshapeFusion", "QDQPropagationTransformer", "EnsureUniqueDQForNodeUnit",
                 "ClipQuantFusion", "ReluQuantFusion", "LabelEncoderFusion",
                 "CastElimination", "ExpandElimination", "NoopElimination",
                 "EliminateSlice", "UnsqueezeElimination", "EliminateDropout",
                 "EliminateIdentity",
                 # Newer onnxruntime (seen in 1.32): more level-1 rewrites, same reason.
                 "Pad_Fusion", "GeluFusionL1", "LayerNormFusionL1",
                 "SliceConcatToSpaceToDepthFusion", "WeightBiasQuantization", "WhereDummyDq",
                 "DoubleQDQPairsRemover", "CastChainElimination", "PreShapeNodeElimination"]
_SIZE_LIMIT = 1 << 31  # onnxruntime writes a bigger optimized model with external data


def layout_transposes(model: onnx.ModelProto) -> int:
    """Transposes inside the graph that read a weighted op's output or feed its data input.
    One at the graph's boundary (tf2onnx's NHWC input -> NCHW, or an output changed back)
    cannot be moved anywhere, so it does not count: the optimizer is not run for it."""
    index = GraphIndex(model.graph)
    boundary = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    count = 0
    for node in index.nodes:
        if node.op_type != "Transpose" or node.input[0] in boundary \
                or node.output[0] in boundary:
            continue
        producer = index.producer.get(node.input[0])
        feeds = any(u.node.op_type in ops.WEIGHTED_OPS and u.index == 0
                    for u in index.consumers.get(node.output[0], ()))
        count += bool(feeds or (producer is not None and producer.op_type in ops.WEIGHTED_OPS))
    return count


def push_transposes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """`model` with its layout Transposes pushed to the graph edges and cancelled, and a
    note on what happened (None when there was nothing to do). The input is not modified;
    when the pass cannot help, `model` itself comes back with a note saying why."""
    before = layout_transposes(model)
    if not before:
        return model, None
    if model.ByteSize() >= _SIZE_LIMIT:
        return model, (f"{before} layout Transpose(s) around weighted ops kept: the layout "
                       "pass does not handle models over 2 GB")
    try:
        import onnxruntime  # noqa: F401 - the pass is onnxruntime's optimizer
    except ImportError:
        return model, (f"{before} layout Transpose(s) around weighted ops kept: the layout "
                       "pass needs onnxruntime (pip install 'qdq-onnx[runtime]')")
    optimized = _run_transpose_optimizer(model)
    reason = _rejected(model, optimized)
    if reason:
        return model, f"{before} layout Transpose(s) around weighted ops kept: {reason}"
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.CopyFrom(optimized.graph)
    removed = _count(model, "Transpose") - _count(out, "Transpose")
    return out, (f"removed {removed} layout Transpose(s) around weighted ops "
                 f"({layout_transposes(out)} left next to one)")


def removed_nodes(before: onnx.ModelProto, after: onnx.ModelProto) -> dict[str, None]:
    """Names of the nodes of `before` that `after` no longer has (for the layer map)."""
    kept = {n.name for n in after.graph.node}
    return {n.name: None for n in before.graph.node if n.name not in kept}


def _run_transpose_optimizer(model: onnx.ModelProto) -> onnx.ModelProto | None:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="qdq-onnx-layout-") as tmp:
        path = Path(tmp) / "layout.onnx"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(path)
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                 providers=["CPUExecutionProvider"],
                                 disabled_optimizers=_OTHER_LEVEL1)
            return onnx.load(str(path))
        except Exception:  # noqa: BLE001 - the pass is an improvement, never a failure
            return None


def _rejected(model: onnx.ModelProto, optimized: onnx.ModelProto | None) -> str | None:
    if optimized is None:
        return "onnxruntime's transpose optimizer failed on this model"
    foreign = sorted({n.domain for n in optimized.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        return f"the optimizer used non-standard ops ({', '.join(foreign)})"
    if _kinds(model) != _kinds(optimized):
        return "the optimizer changed more than Transposes"
    if _count(optimized, "Transpose") >= _count(model, "Transpose"):
        return "onnxruntime's transpose optimizer could not cancel them"
    return None


def _kinds(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node if n.op_type != "Transpose")


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(n.op_type == op_type for n in model.graph.node)
