"""An ONNX graph executed op by op in PyTorch, so autograd differentiates it: the torch
backend's engine. Trainable initializers are `torch.nn.Parameter`s under their ONNX names;
the other initializers are constants (floats on the device; small integer tensors, like
shapes, on the CPU). Ops come from the table in torch_ops*.py; a graph with an op outside
it is refused before anything runs, naming every missing op."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.backend import torch_ops_flow, torch_ops_nn, torch_ops_shape  # noqa: F401
from qdq_onnx.finetune.backend.torch_fused import FakeQuant, quantizer_chains
from qdq_onnx.finetune.backend.torch_ops import OPS, aligned

SMALL = 4096  # integer initializers up to this many elements stay on the CPU (shape maths)


def _attribute(a: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def coverage() -> list[str]:
    """Every ONNX op the torch backend executes (the four op-table modules)."""
    return sorted(OPS)


def missing_ops(graph: onnx.GraphProto) -> list[str]:
    """The op types of `graph` (and its subgraphs) the torch backend cannot execute."""
    found = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            found.add(node.op_type if not node.domain else f"{node.domain}.{node.op_type}")
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                found.update(missing_ops(a.g))
    return sorted(found)


class _Node:
    """One node ready to run: its function, parsed attributes and the context it sees."""

    __slots__ = ("proto", "fn", "attrs", "inputs", "outputs", "ctx")

    def __init__(self, proto: onnx.NodeProto, owner: GraphRunner) -> None:
        self.proto = proto
        self.fn = OPS[proto.op_type]
        self.attrs = {a.name: _attribute(a) if a.type != onnx.AttributeProto.GRAPH else a.g
                      for a in proto.attribute}
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.ctx = _Context(owner, proto)


class _Fused:
    """Five quantizer nodes run as one `FakeQuant` (torch_fused.py)."""

    __slots__ = ("proto", "attrs", "inputs", "outputs", "ctx")

    def __init__(self, chain: list[onnx.NodeProto], owner: GraphRunner) -> None:
        div, add, _, clip, mul = chain
        self.proto, self.attrs = mul, {}
        self.inputs = [div.input[0], div.input[1], add.input[1], clip.input[1], clip.input[2]]
        self.outputs = [mul.output[0]]
        self.ctx = _Context(owner, mul)

    @staticmethod
    def fn(ctx, attrs, x, s, rounder, lo, hi):
        x, s, rounder, lo, hi = aligned(x, s, rounder, lo, hi)
        return FakeQuant.apply(x, s, rounder, lo, hi)


def _reads(graph: onnx.GraphProto) -> list[str]:
    """Every tensor name the nodes of `graph` and of its subgraphs read."""
    out = []
    for node in graph.node:
        out.extend(node.input)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out.extend(_reads(a.g))
    return out


class _Context:
    """What an op function may ask of the graph it runs in."""

    __slots__ = ("owner", "node", "outputs")

    def __init__(self, owner: GraphRunner, node: onnx.NodeProto) -> None:
        self.owner, self.node, self.outputs = owner, node, len(node.output)

    @property
    def opset(self) -> int:
        return self.owner.opset

    @property
    def device(self) -> torch.device:
        return self.owner.device

    def dtype(self, onnx_type: int) -> torch.dtype:
        """The torch dtype of an ONNX element type (by way of numpy's)."""
        if onnx_type == onnx.TensorProto.BFLOAT16:  # numpy has no bfloat16
            return torch.bfloat16
        try:
            return self.numpy_dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
        except (KeyError, TypeError, ValueError) as err:
            raise QdqError(f"{self.node.name}: the torch backend has no type for ONNX type "
                           f"{onnx.TensorProto.DataType.Name(onnx_type)}") from err

    def numpy_dtype(self, dtype: np.dtype) -> torch.dtype:
        return torch.from_numpy(np.zeros(1, dtype)).dtype

    def constant(self, value: np.ndarray) -> torch.Tensor:
        return self.owner.tensor(value)

    def run_body(self, graph: onnx.GraphProto, inputs: list[torch.Tensor]) -> list:
        """Run a Loop/If subgraph with `inputs` for its inputs; it reads outer names too."""
        return self.owner.subgraph(graph).run(dict(zip([i.name for i in graph.input], inputs)),
                                              outer=self.owner.env)


class GraphRunner:
    """Executes one ONNX graph; `params` are the tensors autograd trains."""

    def __init__(self, graph: onnx.GraphProto, opset: int, device: torch.device,
                 params: dict[str, torch.Tensor], constants: dict[str, torch.Tensor] | None = None,
                 fuse: bool = True) -> None:
        missing = missing_ops(graph)
        if missing:
            raise QdqError(f"the torch backend cannot execute op(s) {', '.join(missing)} "
                           "(its op table: qdq_onnx/finetune/backend/torch_ops*.py)")
        self.opset, self.device, self.params, self.fuse = opset, device, params, fuse
        self.constants = dict(constants or {})
        for init in graph.initializer:
            if init.name not in params:
                self.constants[init.name] = self.tensor(numpy_helper.to_array(init))
        self.nodes = self._plan(graph, fuse)
        self.output_names = [o.name for o in graph.output]
        # after each node, the tensors nothing later reads (autograd keeps what it needs)
        inner = {t for n in graph.node for a in n.attribute
                 if a.type == onnx.AttributeProto.GRAPH for t in _reads(a.g)}
        last: dict[str, int] = {}
        for k, node in enumerate(self.nodes):
            for name in node.inputs:
                last[name] = k
        produced = {o for node in self.nodes for o in node.outputs}
        self._free: list[list[str]] = [[] for _ in self.nodes]
        for name, k in last.items():
            if name in produced and name not in inner:
                self._free[k].append(name)
        self._subgraphs: dict[int, GraphRunner] = {}
        self.env: dict[str, Any] = {}

    def _plan(self, graph: onnx.GraphProto, fuse: bool) -> list:
        """The nodes to run: each quantizer's five nodes as one, where its Mul was (when
        `fuse`; every input of the chain exists before its Div, so before its Mul)."""
        protos = list(graph.node)
        readers = Counter(_reads(graph)) + Counter(o.name for o in graph.output)
        chains = quantizer_chains(protos, readers) if fuse else {}
        inside = {k for chain in chains.values() for k in chain}
        return [_Fused([protos[j] for j in chains[k]], self) if k in chains else
                _Node(p, self) for k, p in enumerate(protos)
                if k in chains or k not in inside]

    def tensor(self, value: np.ndarray) -> torch.Tensor:
        """A constant on the device (floats, large integer tensors) or the CPU (shapes)."""
        t = torch.from_numpy(np.array(value, order="C"))  # a copy; 0-d stays 0-d
        if t.is_floating_point() or t.numel() > SMALL:
            return t.to(self.device)
        return t

    def subgraph(self, graph: onnx.GraphProto) -> GraphRunner:
        runner = self._subgraphs.get(id(graph))
        if runner is None:
            runner = GraphRunner(graph, self.opset, self.device, self.params, self.constants,
                                 fuse=self.fuse)
            self._subgraphs[id(graph)] = runner
        return runner

    def run(self, feeds: dict[str, torch.Tensor], outputs: Iterable[str] | None = None,
            outer: dict[str, Any] | None = None) -> list:
        """The values of `outputs` (default: the graph's outputs) for `feeds`."""
        wanted = list(outputs) if outputs is not None else self.output_names
        env = {**(outer or {}), **self.constants, **self.params, **feeds}
        self.env = env
        keep = set(wanted)
        for node, free in zip(self.nodes, self._free):
            args = [env[name] if name else None for name in node.inputs]
            try:
                result = node.fn(node.ctx, node.attrs, *args)
            except QdqError:
                raise
            except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
                raise QdqError(f"the torch backend cannot run node {node.proto.name!r} "
                               f"({node.proto.op_type}): {' '.join(str(exc).split())[:300]}"
                               ) from exc
            if not isinstance(result, tuple):
                result = (result,)
            for name, value in zip(node.outputs, result):
                if name:
                    env[name] = value
            for name in free:
                if name not in keep:
                    env.pop(name, None)
        return [env[name] for name in wanted]
