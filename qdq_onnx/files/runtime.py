"""The installed onnxruntime, seen from the files' side: whether there is one, and the
newest ONNX IR version it reads (so outputs are written at a version it loads, whatever
onnx writes by default)."""

from __future__ import annotations

import functools
from typing import Any

import onnx

from qdq_onnx.errors import RuntimeMissing

# Every onnxruntime qdq-onnx supports (1.19 and newer) reads IR version 10 (onnx 1.16).
READ_BY_ALL = 10
RUNTIME_EXTRAS = ("pip install 'qdq-onnx[runtime]' (any Python 3.10-3.14), or "
                  "'qdq-onnx[train]' to fine-tune too (Python 3.10-3.12)")


def import_onnxruntime() -> Any:
    """The `onnxruntime` module; RuntimeMissing (one line naming the extras) without it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeMissing(f"this needs onnxruntime, which is not installed: "
                             f"{RUNTIME_EXTRAS}") from err
    return onnxruntime


@functools.lru_cache(maxsize=1)
def runtime_ir_version() -> int | None:
    """The newest IR version the installed onnxruntime loads (probed once with a one-node
    model), or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
                                   [value], [onnx.helper.make_tensor_value_info(
                                       "y", onnx.TensorProto.FLOAT, [1])])
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    for ir in range(max(onnx.IR_VERSION, READ_BY_ALL), READ_BY_ALL, -1):
        probe.ir_version = ir
        try:
            ort.InferenceSession(probe.SerializeToString(), sess_options=opts,
                                 providers=["CPUExecutionProvider"])
            return ir
        except Exception:  # noqa: BLE001 - onnxruntime's own error types: too new for it
            continue
    return READ_BY_ALL


def readable_ir_version(ir_version: int) -> int:
    """`ir_version`, lowered to what the installed onnxruntime reads (only above IR 10,
    which every supported onnxruntime reads, is there anything to probe)."""
    if ir_version <= READ_BY_ALL:
        return ir_version
    newest = runtime_ir_version()
    return ir_version if newest is None else min(ir_version, newest)
