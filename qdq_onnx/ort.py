"""onnxruntime sessions with the settings qdq-onnx always wants (CPU provider, quiet logs)."""

from __future__ import annotations

from typing import Any


def inference_session(model: bytes | str, threads: int = 0) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
