"""Structural checks of a model that neither protobuf parsing nor the ONNX checker make:
every weight's payload has the size its dims and type say, and the nodes form no cycle.
Inputs are checked when they are loaded (a truncated weight or a cycle is a one-line error,
not a crash deep in a stage); outputs before they are written."""

from __future__ import annotations

import re
from collections import deque

import onnx

from qdq_onnx.errors import QdqError

_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data")
# Elements stored per typed-field entry where it differs from one (int32_data packs the
# small integer and float16 types one per entry; complex numbers take two).
_PER_ENTRY = {onnx.TensorProto.COMPLEX64: 2, onnx.TensorProto.COMPLEX128: 2}


def _itemsizes() -> dict[int, int]:
    """Bytes per element of every fixed-width ONNX element type, from its name (INT32,
    FLOAT16, FLOAT8E4M3FN, COMPLEX64, ...); packed 4-bit and string types are left out."""
    fixed = {"FLOAT": 4, "DOUBLE": 8, "BOOL": 1}
    out = {}
    for value in onnx.TensorProto.DataType.values():
        name = onnx.TensorProto.DataType.Name(value)
        width = re.match(r"^(?:U?INT|B?FLOAT|COMPLEX)(\d+)", name)
        if name in fixed:
            out[value] = fixed[name]
        elif width and int(width[1]) >= 8:
            out[value] = int(width[1]) // 8
    return out


ITEMSIZE = _itemsizes()


def payload_problem(t: onnx.TensorProto) -> str | None:
    """What is wrong with an embedded tensor's payload, or None."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    count = 1
    for d in t.dims:
        count *= d
    fields = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
    if t.HasField("raw_data"):
        fields.append("raw_data")
    if len(fields) > 1 or (not fields and count):
        return f"holds {len(fields)} payload fields ({', '.join(fields) or 'none'})"
    size = ITEMSIZE.get(t.data_type)
    if fields == ["raw_data"] and size is not None and len(t.raw_data) != count * size:
        return (f"has {len(t.raw_data)} bytes of data, its dims {list(t.dims)} need "
                f"{count * size}")
    if fields and fields != ["raw_data"] and fields[0] != "string_data":
        have = len(getattr(t, fields[0])) // _PER_ENTRY.get(t.data_type, 1)
        if have != count:
            return f"has {have} values, its dims {list(t.dims)} need {count}"
    return None


def check_payloads(model: onnx.ModelProto, what: str = "the model") -> None:
    """Every embedded initializer of a model about to be written holds exactly one payload
    of the size its dims and type say (the ONNX checker reads neither)."""
    for t in model.graph.initializer:
        problem = payload_problem(t)
        if problem:
            raise QdqError(f"{what} fails the ONNX checker: tensor {t.name!r} {problem}")


def cycle_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of nodes that can never run because they wait on each other (a cycle), in
    graph order; empty for an acyclic graph (in any node order)."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    waiting = [0] * len(graph.node)
    readers: dict[int, list[int]] = {}
    for i, n in enumerate(graph.node):
        deps = {producer[t] for t in n.input if t in producer}
        waiting[i] = len(deps)
        for d in deps:
            readers.setdefault(d, []).append(i)
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    done = 0
    while ready:
        i = ready.popleft()
        done += 1
        for j in readers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if done == len(graph.node):
        return []
    return [n.name or f"#{i} ({n.op_type})" for i, n in enumerate(graph.node) if waiting[i]]


def check_structure(model: onnx.ModelProto, source: str = "the model") -> None:
    """QdqError naming the first truncated or malformed weight, or the nodes of a cycle."""
    for t in model.graph.initializer:
        problem = payload_problem(t)
        if problem:
            raise QdqError(f"{source}: weight {t.name!r} {problem}: the file is truncated "
                           "or corrupt; export the model again")
    stuck = cycle_nodes(model.graph)
    if stuck:
        shown = ", ".join(repr(n) for n in stuck[:4]) + (" ..." if len(stuck) > 4 else "")
        raise QdqError(f"{source}: not a valid ONNX graph: nodes {shown} form a cycle (each "
                       "waits on another's output)")
