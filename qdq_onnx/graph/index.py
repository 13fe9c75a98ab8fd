"""A read-only index over an ONNX graph: producers, consumers and constants in O(1).

Planning walks the graph many times; keeping these maps avoids the quadratic rescans that
make naive graph tools slow on models with thousands of nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class Use:
    """One input slot of one node: `node.input[index]`."""

    node: onnx.NodeProto
    index: int


class GraphIndex:
    """Producer/consumer/constant lookups over one onnx.GraphProto (the main graph)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.by_name: dict[str, onnx.NodeProto] = {n.name: n for n in self.nodes}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[Use]] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers[name].append(Use(node, i))
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.constant_nodes: dict[str, onnx.NodeProto] = {
            n.output[0]: n for n in self.nodes if n.op_type == "Constant" and n.output
        }
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = {o.name for o in graph.output}

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.initializers or tensor in self.constant_nodes

    def constant_value(self, tensor: str) -> np.ndarray | None:
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        node = self.constant_nodes.get(tensor)
        if node is None:
            return None
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
        return None

    def constant_shape(self, tensor: str) -> tuple[int, ...] | None:
        if tensor in self.initializers:
            return tuple(self.initializers[tensor].dims)
        value = self.constant_value(tensor)
        return None if value is None else tuple(value.shape)

    def live_inputs(self, node: onnx.NodeProto) -> list[int]:
        """Indices of the node's inputs that are computed at run time (not constants)."""
        return [i for i, t in enumerate(node.input) if t and not self.is_constant(t)]

    def consumer_count(self, tensor: str) -> int:
        return len(self.consumers.get(tensor, ())) + (1 if tensor in self.graph_outputs else 0)

    def successors(self, node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
        for out in node.output:
            for use in self.consumers.get(out, ()):
                yield use.node

    def fork_distance(self, tensor: str, limit: int = 10_000) -> int:
        """Nodes walked back from `tensor` (first live input each time) to the nearest tensor
        that several nodes read (a fork) or to a graph input."""
        steps = 0
        t = tensor
        while steps < limit:
            node = self.producer.get(t)
            if node is None:
                return steps
            live = self.live_inputs(node)
            if not live:
                return steps
            steps += 1
            t = node.input[live[0]]
            if self.consumer_count(t) > 1:
                return steps
        return steps

    def neutral_sources(self, tensor: str, neutral: frozenset[str] | set[str],
                        is_source: Callable[[str], bool],
                        max_hops: int = 16) -> list[tuple[str, int]] | None:
        """The tensors that `tensor` is a precision-neutral copy of, with the hops to each.

        Walks back from the producer of `tensor` through ops in `neutral` to the first
        tensors for which `is_source` holds. A multi-input op (Concat) is followed on every
        live input; if any path meets a non-neutral op, a graph input or `max_hops` first,
        new values enter and the answer is None. Placement (scale sharing) and lint
        (re-quantization) both use this one definition."""
        found: list[tuple[str, int]] = []
        stack = [(tensor, 0)]
        while stack:
            t, hops = stack.pop()
            node = self.producer.get(t)
            live = self.live_inputs(node) if node is not None else []
            if node is None or node.op_type not in neutral or not live or hops >= max_hops:
                return None
            for i in live:
                src = node.input[i]
                if is_source(src):
                    found.append((src, hops + 1))
                else:
                    stack.append((src, hops + 1))
        return found


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def upstream(producer: dict[str, onnx.NodeProto], outputs: list[str],
             follow: set[str] | None = None) -> set[str]:
    """Every tensor `outputs` are computed from (themselves included), walking back through
    the producers; with `follow`, only through those tensors."""
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is not None:
            stack.extend(i for i in node.input if follow is None or i in follow)
    return seen

