"""onnxruntime sessions with the settings qdq-onnx always wants (CPU provider, quiet logs)."""

from __future__ import annotations

from typing import Any


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
    compute the same thing op for op give bit-identical results."""
    from qdq_onnx.files.runtime import import_onnxruntime, readable_ir_version

    ort = import_onnxruntime()
    keep = None
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

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    if keep is not None:
        session._qdq_onnx_tmp = keep  # external data must outlive the session
    return session
