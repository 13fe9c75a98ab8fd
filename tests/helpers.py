"""Small ONNX graph builders for tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(1234)


class G:
    """Build a float model node by node: `g.conv("c1", "x", 8)` etc."""

    def __init__(self, name: str = "g", input_shape=(1, 4, 8, 8), opset: int = 13) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.name = name
        self.opset = opset
        self.input_shape = list(input_shape)
        self.channels: dict[str, int] = {"x": input_shape[1]}

    def w(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, name: str, inputs: list[str], **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, name: str, x: str, k: int, group: int = 1, bias: bool = True,
             kernel: int = 3) -> str:
        c = self.channels[x]
        w = self.w(f"{name}_w", RNG.normal(0, 0.3, (k, c // group, kernel, kernel)))
        ins = [x, w]
        if bias:
            ins.append(self.w(f"{name}_b", RNG.normal(0, 0.1, (k,))))
        out = self.node("Conv", name, ins, group=group, pads=[kernel // 2] * 4)
        self.channels[out] = k
        return out

    def convt(self, name: str, x: str, k: int) -> str:
        c = self.channels[x]
        w = self.w(f"{name}_w", RNG.normal(0, 0.3, (c, k, 3, 3)))
        out = self.node("ConvTranspose", name, [x, w], pads=[1, 1, 1, 1])
        self.channels[out] = k
        return out

    def bn(self, name: str, x: str) -> str:
        c = self.channels[x]
        ins = [x, self.w(f"{name}_g", RNG.uniform(0.5, 1.5, c)),
               self.w(f"{name}_b", RNG.normal(0, 0.1, c)),
               self.w(f"{name}_m", RNG.normal(0, 0.1, c)),
               self.w(f"{name}_v", RNG.uniform(0.5, 1.5, c))]
        out = self.node("BatchNormalization", name, ins)
        self.channels[out] = c
        return out

    def unary(self, op: str, name: str, x: str, **attrs) -> str:
        out = self.node(op, name, [x], **attrs)
        self.channels[out] = self.channels.get(x, 0)
        return out

    def binary(self, op: str, name: str, a: str, b: str) -> str:
        out = self.node(op, name, [a, b])
        self.channels[out] = self.channels.get(a, 0)
        return out

    def model(self, outputs: list[str], output_shapes: list | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.input_shape)],
            [onnx.ValueInfoProto(name=o) for o in outputs],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m)
        inferred = {v.name: v for v in m.graph.value_info}
        for out in m.graph.output:
            if out.name in inferred:
                out.CopyFrom(inferred[out.name])
        onnx.checker.check_model(m, full_check=True)
        return m


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    from qdq_onnx.graph.sessions import inference_session

    sess = inference_session(model.SerializeToString())
    return sess.run(None, {sess.get_inputs()[0].name: x})


def dq_fed(model: onnx.ModelProto) -> set[tuple[str, int]]:
    """(node, input index) pairs fed by a DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    out = set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, t in enumerate(n.input):
            p = producers.get(t)
            if p is not None and p.op_type == "DequantizeLinear":
                out.add((n.name, i))
    return out
