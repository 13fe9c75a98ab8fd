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


LN_RNG = np.random.default_rng(5)
LN_CHANNELS = 12


def decomposed_layernorm(opset=17, beta=True, near_miss=False):
    """tf2onnx's form: GAP moments, Sub, x*x, eps, Sqrt, Reciprocal, gamma, scale and shift."""
    gamma = LN_RNG.uniform(0.5, 1.5, (1, 1, LN_CHANNELS)).astype(np.float32)
    inits = [numpy_helper.from_array(gamma, "gamma"),
             numpy_helper.from_array(np.float32(1e-3), "eps"),
             numpy_helper.from_array(
                 LN_RNG.normal(0, .3, (LN_CHANNELS, 5)).astype(np.float32), "w")]
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["mean"], name="mean"),
        helper.make_node("Sub", ["x", "mean"], ["d"], name="sub"),
        helper.make_node("Mul", ["d", "d"], ["sq"], name="sq"),
        helper.make_node("GlobalAveragePool", ["sq"], ["var"], name="var"),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["s"], name="sqrt"),
        helper.make_node("Reciprocal", ["s"], ["r"], name="rec"),
        helper.make_node("Mul", ["r", "gamma"], ["k"], name="k"),
        helper.make_node("Mul", ["x", "k"], ["xs"], name="scaled"),
        helper.make_node("Neg", ["mean"], ["nm"], name="neg"),
        helper.make_node("Mul", ["nm", "k"], ["sh"], name="shifted"),
    ]
    shift = "sh"
    if beta:
        beta_value = LN_RNG.normal(0, .5, (1, 1, LN_CHANNELS)).astype(np.float32)
        inits.append(numpy_helper.from_array(beta_value, "beta"))
        nodes.append(helper.make_node("Add", ["sh", "beta"], ["shb"], name="beta_add"))
        shift = "shb"
    nodes.append(helper.make_node("Add", ["xs", shift], ["ln"], name="ln_out"))
    if near_miss:  # the variance read elsewhere too: not a plain layer normalisation
        nodes.append(helper.make_node("Relu", ["var"], ["leak"], name="leak"))
    nodes.append(helper.make_node("MatMul", ["ln", "w"], ["y"], name="head"))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7, 5])]
    if near_miss:
        outs.append(helper.make_tensor_value_info("leak", TensorProto.FLOAT, ["N", 7, 1]))
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 7, LN_CHANNELS])], outs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def small_classifier(shape=("N", 3, 8, 8)):
    """Conv-ReLU-Conv-GAP-Flatten over NCHW 3x8x8: a small classifier with 4 outputs."""
    g = G(input_shape=shape)
    a = g.unary("Relu", "r", g.conv("c0", "x", 4))
    y = g.node("GlobalAveragePool", "gap", [g.conv("c1", a, 4)])
    flat = g.node("Flatten", "flat", [y])
    g.channels[flat] = 4
    return g.model([flat])


def mlp(widths=(16, 16, 16), seed=1, softmax=False):
    """MatMul+Add(+ReLU) layers over 64 inputs (scikit-learn digits), 10 logits."""
    r = np.random.default_rng(seed)
    dims = [64, *widths, 10]
    inits, nodes, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        inits += [numpy_helper.from_array((r.normal(0, 1, (a, b)) * np.sqrt(2 / a))
                                          .astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"bias{i}")]
        prev = f"a{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [prev], ["out"], name="softmax", axis=-1))
    else:
        nodes[-1].output[0] = "out"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def multi_head_attention(seq=16, heads=2, head=32, merge_target="shape"):
    """One multi-head self-attention over x [N, S, heads*head]: Q/K/V Dense projections split
    into heads (Reshape, Transpose), BMM1 = Q x K^T, scale, Softmax, BMM2 = P x V, the heads
    merged back (Transpose [N, H, S, D] -> [N, S, H, D], Reshape [N, S, H*D]) and the output
    projection. `merge_target` "shape": the merge Reshape's target is computed from the
    transposed tensor's own Shape (as tf2onnx writes it, KerasHub's BERT); "constant":
    [0, 0, H*D] (as PyTorch exports write it)."""
    width = heads * head
    r = np.random.default_rng(5)
    inits = [numpy_helper.from_array(np.float32(head ** -0.5), "scale"),
             numpy_helper.from_array(np.array([0, 0, heads, head], np.int64), "split")]
    nodes = []

    def dense(name, x):
        inits.extend([
            numpy_helper.from_array(r.normal(0, 0.2, (width, width)).astype(np.float32),
                                    f"{name}_w"),
            numpy_helper.from_array(r.normal(0, 0.1, width).astype(np.float32), f"{name}_b")])
        nodes.extend([helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"], name=name),
                      helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [f"{name}_y"],
                                       name=f"{name}_bias")])
        return f"{name}_y"

    def split_heads(name, perm):
        nodes.extend([helper.make_node("Reshape", [dense(f"{name}_proj", "x"), "split"],
                                       [f"{name}_4d"], name=f"{name}_split"),
                      helper.make_node("Transpose", [f"{name}_4d"], [f"{name}_heads"],
                                       name=f"{name}_heads", perm=perm)])
        return f"{name}_heads"

    q, k, v = (split_heads("q", [0, 2, 1, 3]), split_heads("k", [0, 2, 3, 1]),
               split_heads("v", [0, 2, 1, 3]))
    nodes += [helper.make_node("MatMul", [q, k], ["scores"], name="bmm1"),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="score_scale"),
              helper.make_node("Softmax", ["scaled"], ["probs"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["probs", v], ["context"], name="bmm2"),
              helper.make_node("Transpose", ["context"], ["merged"], name="merge_heads",
                               perm=[0, 2, 1, 3])]
    if merge_target == "shape":
        inits += [numpy_helper.from_array(np.array(v, np.int64), n)
                  for n, v in (("zero", [0]), ("two", [2]), ("width", [width]))]
        nodes += [helper.make_node("Shape", ["merged"], ["merged_shape"], name="merged_shape"),
                  helper.make_node("Slice", ["merged_shape", "zero", "two"], ["lead"],
                                   name="lead"),
                  helper.make_node("Concat", ["lead", "width"], ["target"], name="target",
                                   axis=0)]
    else:
        inits.append(numpy_helper.from_array(np.array([0, 0, width], np.int64), "target"))
    nodes.append(helper.make_node("Reshape", ["merged", "target"], ["merged_3d"],
                                  name="merge"))
    out = dense("out_proj", "merged_3d")
    graph = helper.make_graph(
        nodes, "mha", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", seq, width])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", seq, width])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def fp16_overflow_model(weight_scale: float = 30.0, extra=()):
    """x -> MatMul (INT8) -> y * y -> Sqrt -> Relu: with `weight_scale` 30, |y| reaches
    ~400 and the square ~1.6e5, past FP16's 65504, although input and output are small."""
    w = (np.random.default_rng(3).normal(size=(16, 8)) * weight_scale).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"),
             helper.make_node("Mul", ["y", "y"], ["big"], name="square"),
             helper.make_node("Sqrt", ["big"], ["back"], name="root"),
             helper.make_node("Relu", ["back"], ["out"], name="relu")]
    for node, init in extra:
        nodes.insert(-1, node)
        inits.append(init)
    g = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 16])], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, [None, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def fp8_everywhere_rules():
    """The bundled TensorRT rules without their `fp8` policy: with --dtype fp8 every Q/DQ the
    op rules place is FP8 (the per-layer INT8 fallbacks of TRT-F001..F003 off), for tests
    of the FP8 mechanics on models narrower than FP8 kernels want."""
    import copy

    from qdq_onnx.placement.rules import load_rules

    rules = copy.copy(load_rules("tensorrt"))
    rules.fp8 = []
    return rules


def fp8_cnn(flatten: str = "Squeeze", depthwise: bool = False, seed: int = 7):
    """x [N, 3, 12, 12] -> Conv 3->16 (stem) -> [depthwise Conv 16, group 16] -> Conv
    16->32 -> GlobalAveragePool -> `flatten` (Squeeze of axes 2, 3; Flatten; or Reshape to
    [0, -1]) -> Gemm 32->24, each Conv followed by a Relu. The 16->32 Conv and the Gemm
    (FP8 by the rules) have small weights beside biases of the size BatchNorm folding
    leaves (|b| up to ~3): what makes onnxruntime's int32 bias rewrite overflow FP16 for
    FP8 scales; the INT8 stem and depthwise Conv stay clear of it."""
    r = np.random.default_rng(seed)
    g = G(input_shape=("N", 3, 12, 12), opset=13)

    def conv(name, x, k, group=1, w_std=0.3, b_std=0.1):
        c = g.channels[x]
        g.w(f"{name}_w", r.normal(0, w_std, (k, c // group, 3, 3)))
        g.w(f"{name}_b", r.normal(0, b_std, (k,)))
        out = g.node("Conv", name, [x, f"{name}_w", f"{name}_b"], group=group, pads=[1] * 4)
        g.channels[out] = k
        return g.unary("Relu", f"{name}_relu", out)

    h = conv("stem", "x", 16)
    if depthwise:
        h = conv("dw", h, 16, group=16)
    h = conv("body", h, 32, w_std=0.05, b_std=1.0)
    pooled = g.node("GlobalAveragePool", "gap", [h])
    if flatten == "Squeeze":
        g.inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "sq_axes"))
        flat = g.node("Squeeze", "squeeze", [pooled, "sq_axes"])
    elif flatten == "Reshape":
        g.inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
        flat = g.node("Reshape", "reshape", [pooled, "flat_shape"])
    else:
        flat = g.node("Flatten", "flatten", [pooled], axis=1)
    g.channels[flat] = 32
    g.w("fc_w", r.normal(0, 0.2, (24, 32)))
    g.w("fc_b", r.normal(0, 1.0, (24,)))
    return g.model([g.node("Gemm", "fc", [flat, "fc_w", "fc_b"], transB=1)])


def insert_explained(model: onnx.ModelProto, data: np.ndarray, folder, capsys):
    """`qdq-onnx insert MODEL --calib DATA -o q.onnx --explain` in `folder`: (the output's
    path, what it printed)."""
    from qdq_onnx.cli.main import main

    onnx.save(model, folder / "m.onnx")
    np.savez(folder / "calib.npz", x=data)
    out = folder / "q.onnx"
    assert main(["insert", str(folder / "m.onnx"), "--calib", str(folder / "calib.npz"),
                 "-o", str(out), "--explain"]) == 0
    return out, capsys.readouterr()
