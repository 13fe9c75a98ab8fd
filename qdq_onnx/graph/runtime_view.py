"""What onnxruntime is given to run a model whose QuantizeLinear nodes read FP16 or BF16.

onnxruntime's CPU QuantizeLinear for float16 inputs truncates x / scale toward zero instead
of rounding to nearest even as the ONNX definition says (microsoft/onnxruntime#18576 and
#22741; fixed by pull request #32452, after 1.29). Measured here on 1.19.2: half the weights
of a ResNet50 convolution came out one step toward zero; 1.32 rounds correctly. TensorRT
rounds to nearest even, so every figure qdq-onnx takes from a truncating onnxruntime would
be wrong. Where one probe shows the truncation, sessions run a view
of such a model in which each reduced-precision QuantizeLinear reads its input through a
Cast to FP32 and takes an FP32 copy of its scale: the same values (FP16 and BF16 widen to
FP32 exactly) with the defined rounding. The file written to disk is never changed."""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import helper

from qdq_onnx.types.float_type import REDUCED_ELEM_TYPES, as_fp32
from qdq_onnx.types.scheme import INT8


def reduced_quantize_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The QuantizeLinear nodes whose scale (so input) is FP16 or BF16."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear"
            and n.input[1] in inits and inits[n.input[1]].data_type in REDUCED_ELEM_TYPES]


@functools.lru_cache(maxsize=1)
def runtime_truncates() -> bool:
    """Whether the installed onnxruntime's CPU QuantizeLinear truncates FP16 inputs (1.19.2
    does; 1.32 rounds to nearest even): one QuantizeLinear on 0.5 steps, run once."""
    from onnx import numpy_helper

    from qdq_onnx.files.runtime import import_onnxruntime

    ort = import_onnxruntime()
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])], "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [2])],
        [helper.make_tensor_value_info("q", INT8.element_type, [2])],
        [numpy_helper.from_array(np.float16(1.0), "s"),
         numpy_helper.from_array(np.zeros((), INT8.zero_point_dtype), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    q = session.run(None, {"x": np.array([1.75, -1.75], np.float16)})[0]
    return q.tolist() != [2, -2]


def exact_rounding_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` unchanged when no QuantizeLinear reads FP16/BF16; else a copy in which each
    such pair runs in FP32 between Casts: Cast(x, FP32) -> Q -> DQ (FP32 copies of the
    scale) -> Cast back. q * scale is exact in FP32, so the Cast back rounds it as an FP16
    DequantizeLinear does, and the QuantizeLinear rounds to nearest even."""
    nodes = reduced_quantize_nodes(model)
    if not nodes or not runtime_truncates():
        return model
    view = onnx.ModelProto()
    view.CopyFrom(model)
    inits = {t.name: t for t in view.graph.initializer}
    quantized = {n.output[0]: n for n in view.graph.node if n.name in {m.name for m in nodes}}
    wide: dict[str, str] = {}

    def wide_scale(name: str) -> str:
        if name not in wide:
            wide[name] = f"{name}__fp32_view"
            view.graph.initializer.append(onnx.numpy_helper.from_array(
                as_fp32(inits[name]), wide[name]))
        return wide[name]

    out: list[onnx.NodeProto] = []
    for node in view.graph.node:
        after = []
        if node.output and node.output[0] in quantized:  # a reduced QuantizeLinear
            x = f"{node.input[0]}__fp32_view_{node.name}"
            out.append(helper.make_node("Cast", [node.input[0]], [x], name=x,
                                        to=onnx.TensorProto.FLOAT))
            node.input[0], node.input[1] = x, wide_scale(node.input[1])
        elif node.op_type == "DequantizeLinear" and node.input[0] in quantized \
                and node.input[1] in inits:
            kind = inits[node.input[1]].data_type
            y = f"{node.output[0]}__fp32_view"
            after.append(helper.make_node("Cast", [y], [node.output[0]], name=y, to=kind))
            node.input[1], node.output[0] = wide_scale(node.input[1]), y
        out.append(node)
        out += after
    del view.graph.node[:]
    view.graph.node.extend(out)
    return view


def has_float8_qdq(model: onnx.ModelProto) -> bool:
    """Whether a QuantizeLinear/DequantizeLinear of the model quantizes to FP8. onnxruntime
    1.19's graph optimizations miscompute such graphs (a small CNN: 1.8 dB output SQNR
    with them, 30.2 dB without, where each pair alone matches the ONNX definition), so
    sessions for them run without graph optimizations."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
               and inits.get(n.input[2]) in FLOAT8_TYPES for n in model.graph.node)


FLOAT8_TYPES = frozenset({onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
                          onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ})
