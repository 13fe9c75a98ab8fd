"""What onnxruntime-training can differentiate, from the table `scripts/gradient_coverage.py`
asks it for (gradient_coverage.json beside this file), and the check, before any training
graph is built, that every op on a gradient path of a training graph trains: one line naming
the op, the node and what to do, instead of the engine's C++ signature at its first step."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import upstream

# The exact rewrites fine-tuning trains in place of ops that do not train (lowering*.py).
REWRITES = {
    "AveragePool": "depthwise Conv with fixed weights",
    ops.CONV_TRANSPOSE: "Conv over the zero-upsampled input",
    "GlobalMaxPool": "ArgMax, GatherElements over the spatial axes",
    "HardSigmoid": "Mul, Add, Clip",
    "HardSwish": "Mul, Add, Clip, Mul",
    "Pad": "Gather per padded axis (reflect, edge, wrap)",
    "PRelu": "Relu, Neg, Mul, Sub",
    "ReduceMax": "ArgMax, GatherElements",
    "ReduceMin": "ArgMin, GatherElements",
    "Resize": "Gather and weights per resized axis",
    "Split": "Slice per read output (when an output is not read)",
    "Upsample": "Gather and weights per resized axis",
}
_TABLE = Path(__file__).with_name("gradient_coverage.json")
# "wrong gradient" too: training on it would be silently wrong
_FAILING = ("no gradient", "fails to run", "wrong gradient")


@lru_cache(maxsize=1)
def table() -> dict:
    """The committed coverage table."""
    return json.loads(_TABLE.read_text())


def status(op: str, opset: int) -> tuple[str, str] | None:
    """(status, detail) of `op` at the newest probed version not above `opset`, or None
    when the table has no row for it. Of several variants of one op (LayerNormalization
    with one output and with all three, which the training graph always gives it), the op
    trains when one of them does."""
    rows = [r for r in table()["rows"] if r["op"].split("(")[0] == op and r["opset"] <= opset]
    if not rows:
        return None
    newest = max(r["opset"] for r in rows)
    at = [r for r in rows if r["opset"] == newest]
    row = next((r for r in at if r["status"] == "trains"), at[0])
    return row["status"], row["detail"]


def gradient_nodes(model: onnx.ModelProto, trainable: list[str], outputs: list[str]
                   ) -> list[onnx.NodeProto]:
    """The nodes a gradient flows through: a float input computed from a trainable
    parameter and a float output a trained output depends on."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    from qdq_onnx.graph.element_types import element_types

    types = element_types(model)
    is_float = {t for t, e in types.items() if e in floats}
    reached = set(trainable)
    for node in model.graph.node:  # topological order
        if any(t in reached for t in node.input):
            reached.update(o for o in node.output if o in is_float)
    producer = {o: n for n in model.graph.node for o in n.output}
    needed = upstream(producer, outputs, follow=is_float)
    return [n for n in model.graph.node
            if any(t in reached and t in is_float for t in n.input)
            and any(o in needed for o in n.output)]


def require_trainable_ops(model: onnx.ModelProto, trainable: list[str], outputs: list[str]
                          ) -> None:
    """QdqError naming the first op on a gradient path that onnxruntime-training cannot
    differentiate by the table (the training graph's rewrites already applied)."""
    opset = default_opset(model)
    for node in gradient_nodes(model, trainable, outputs):
        if node.domain not in ("", "ai.onnx"):
            continue
        found = status(node.op_type, opset)
        if found is not None and found[0] in _FAILING:
            raise untrainable(node.op_type, node.name, found[1])


def untrainable(op: str, node: str, detail: str = "") -> QdqError:
    """The one-line error for an op onnxruntime-training cannot differentiate."""
    why = f" ({detail})" if detail else ""
    return QdqError(
        f"{node}: onnxruntime-training cannot differentiate {op}{why}, and qdq-onnx has no "
        f"training rewrite for {op} yet (docs/gradient-coverage.md lists what trains); "
        "insert, calibrate and lint work on this model; to fine-tune it, train with "
        "--backend torch (qdq-onnx[torch], which differentiates it), or freeze what lies "
        "before it by quantizing only the layers after it (--mode partial)")
