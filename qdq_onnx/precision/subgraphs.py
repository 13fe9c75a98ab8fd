"""Control-flow ops (If, Loop, Scan) under typing: their subgraphs keep their own types, so
the op stays FP32 and every outer tensor a subgraph reads by name must reach it as FP32."""

from __future__ import annotations

import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The node's subgraph attributes (If branches, Loop and Scan bodies)."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors the node's subgraphs read by name (not passed as inputs)."""
    found: set[str] = set()
    for g in subgraphs(node):
        local = {i.name for i in g.input} | {t.name for t in g.initializer} | \
            {o for n in g.node for o in n.output}
        for n in g.node:
            found |= {t for t in n.input if t and t not in local}
            found |= implicit_inputs(n) - local
    return found


def rename_implicit(node: onnx.NodeProto, mapping: dict[str, str]) -> None:
    """Point the subgraphs' reads of outer tensors at other names (their FP32 Casts)."""
    for g in subgraphs(node):
        local = {i.name for i in g.input} | {t.name for t in g.initializer} | \
            {o for n in g.node for o in n.output}
        outer = {k: v for k, v in mapping.items() if k not in local}
        for n in g.node:
            for i, t in enumerate(n.input):
                if t in outer:
                    n.input[i] = outer[t]
            rename_implicit(n, outer)
