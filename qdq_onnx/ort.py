"""onnxruntime sessions with the settings qdq-onnx always wants (CPU provider, quiet logs)."""

from __future__ import annotations

from typing import Any


def inference_session(model: bytes | str, threads: int = 0, optimize: bool = True) -> Any:
    """`optimize=False` turns graph optimizations off: no kernel fusions, so two graphs that
    compute the same thing op for op give bit-identical results."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
