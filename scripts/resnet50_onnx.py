"""ResNet50 (v1.5: stride on the 3x3 convolution of each bottleneck; 25.6M parameters) as
an ONNX graph written with onnx.helper: channels first, symbolic batch, 224x224x3 input,
1000 logits, He-initialised random weights from a seed and BatchNormalization with unit
statistics. No framework is needed to make it (the GPU machines have no TensorFlow), so the
CPU and GPU benchmarks train the very same graph.

    python scripts/resnet50_onnx.py OUT.onnx
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        name = self._name("conv")
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        self.nodes.append(helper.make_node(
            "Conv", [x, self._init(f"{name}_w", w)], [f"{name}_y"], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        bn = f"{name}_bn"
        stats = [self._init(f"{bn}_{s}", np.full(cout, v)) for s, v in
                 (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))]
        self.nodes.append(helper.make_node("BatchNormalization", [f"{name}_y", *stats],
                                           [f"{bn}_y"], name=bn, epsilon=1e-5))
        if not relu:
            return f"{bn}_y"
        self.nodes.append(helper.make_node("Relu", [f"{bn}_y"], [f"{name}_r"],
                                           name=f"{name}_relu"))
        return f"{name}_r"

    def bottleneck(self, x: str, cin: int, width: int, stride: int) -> str:
        y = self.conv_bn(x, cin, width, 1, 1, True)
        y = self.conv_bn(y, width, width, 3, stride, True)
        y = self.conv_bn(y, width, 4 * width, 1, 1, False)
        short = x if stride == 1 and cin == 4 * width else \
            self.conv_bn(x, cin, 4 * width, 1, stride, False)
        name = self._name("add")
        self.nodes += [helper.make_node("Add", [y, short], [f"{name}_y"], name=name),
                       helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"],
                                        name=f"{name}_relu")]
        return f"{name}_r"


def resnet50(seed: int = 0, classes: int = 1000) -> onnx.ModelProto:
    b = _Builder(seed)
    x = b.conv_bn("input", 3, 64, 7, 2, True)
    b.nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1",
                                    kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool1", 64
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            x = b.bottleneck(x, cin, width, stride if i == 0 else 1)
            cin = 4 * width
    w = b.rng.standard_normal((cin, classes)) * np.sqrt(1.0 / cin)
    b.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
                helper.make_node("Flatten", ["gap"], ["features"], name="flatten"),
                helper.make_node("Gemm", ["features", b._init("fc_w", w),
                                          b._init("fc_b", np.zeros(classes))], ["logits"],
                                 name="fc")]
    graph = helper.make_graph(
        b.nodes, "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(resnet50(), sys.argv[1])
