"""onnxruntime sessions with the settings qdq-onnx always wants (CPU provider, quiet logs)."""

from __future__ import annotations

import re
from typing import Any

from qdq_onnx.errors import QdqError


def with_outputs(model: Any, outputs: list[str]) -> Any:
    """A copy of `model` that also returns the given intermediate tensors."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in outputs if t not in have)
    return probe


def inference_session(model: Any, threads: int = 0, optimize: bool = True) -> Any:
    """A CPU session for a path, serialised bytes or an onnx.ModelProto (a proto over 2 GB is
    written with external data to a temporary folder, which the session keeps alive).
    `optimize=False` turns graph optimizations off: no kernel fusions, so two graphs that
    compute the same thing op for op give bit-identical results. A model whose
    QuantizeLinear nodes read FP16/BF16 runs with the ONNX-defined rounding
    (`qdq_onnx.graph.runtime_view`)."""
    from qdq_onnx.files.runtime import import_onnxruntime, readable_ir_version

    ort = import_onnxruntime()
    keep = None
    if not isinstance(model, (bytes, str)):
        from qdq_onnx.graph.runtime_view import exact_rounding_view, has_float8_qdq

        optimize = optimize and not has_float8_qdq(model)
        model = exact_rounding_view(model)
    if not isinstance(model, (bytes, str)) and \
            readable_ir_version(model.ir_version) != model.ir_version:
        import onnx

        older = onnx.ModelProto()  # the caller's model stays as it is
        older.CopyFrom(model)
        older.ir_version = readable_ir_version(model.ir_version)
        model = older
    if not isinstance(model, (bytes, str)):
        from qdq_onnx.files.onnx_files import _PROTOBUF_LIMIT, approx_size, save_model_atomic

        if approx_size(model) < _PROTOBUF_LIMIT:
            model = model.SerializeToString()
        else:
            import tempfile

            keep = tempfile.TemporaryDirectory(prefix="qdq-onnx-session-")
            path = save_model_atomic(model, f"{keep.name}/model.onnx", external=True)
            model = str(path)

    from qdq_onnx.parallel.world import threads_per_rank

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = threads or threads_per_rank()
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    if keep is not None:
        session._qdq_onnx_tmp = keep  # external data must outlive the session
    return session


_NODE_FAILURE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", re.S)


def runtime_failure(exc: BaseException) -> QdqError | None:
    """An onnxruntime error as one QdqError naming the node that failed, or None when `exc`
    is not onnxruntime's (its errors are its own types, not a Python hierarchy to catch)."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return None
    text = str(exc).strip()
    found = _NODE_FAILURE.search(text)
    if found:
        op, name, message = found.groups()
        message = message.strip().splitlines()[0] if message.strip() else ""
        return QdqError(f"onnxruntime cannot run node {name!r} ({op}): {message}")
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return QdqError(f"onnxruntime cannot run the model: {text.splitlines()[0] if text else ''}")


def run_checked(session: Any, fetch: list[str] | None, feed: dict[str, Any]) -> list[Any]:
    """`session.run`, with an onnxruntime failure raised as a QdqError naming the node."""
    try:
        return session.run(fetch, feed)
    except Exception as exc:  # onnxruntime's own exception types
        converted = runtime_failure(exc)
        if converted is None:
            raise
        raise converted from exc
