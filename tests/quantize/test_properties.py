"""Property-based tests over randomly generated small CNN/MLP graphs (branches, residual
Adds, Concat, pooling, Gemm/MatMul heads): insertion always yields a checked, runnable graph;
every quantization point stays within half a step of its input; scales are finite and
positive; inserting twice is refused; the emitted graph equals the training graph."""

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.errors import QdqError
from qdq_onnx.graph.qdq import qdq_pairs
from qdq_onnx.graph.sessions import inference_session, with_outputs

COMMON = dict(deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
COUNT = {"insert": 0, "emit": 0}


class Builder:
    def __init__(self, rng: np.random.Generator, channels: int, size: int) -> None:
        self.rng, self.nodes, self.inits, self.k = rng, [], [], 0
        self.channels, self.size = channels, size

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}{self.k}"

    def const(self, base: str, shape) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(
            (self.rng.normal(0, 1, shape) / np.sqrt(np.prod(shape[1:]) or 1)).astype("f"), n))
        return n

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        n = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [n], name=n, **attrs))
        return n

    def conv(self, x: str, c_in: int, c_out: int, depthwise: bool = False) -> str:
        group = c_in if depthwise else 1
        c_out = c_in if depthwise else c_out
        w = self.const("w", (c_out, c_in // group, 3, 3))
        return self.op("Conv", [x, w, self.const("b", (c_out,))], pads=[1, 1, 1, 1],
                       group=group)


@st.composite
def graphs(draw, average_pool: bool = True):
    seed = draw(st.integers(0, 2**31 - 1))
    channels = draw(st.sampled_from([2, 4, 6]))
    b = Builder(np.random.default_rng(seed), channels, 6)
    x, c = "x", channels
    for _ in range(draw(st.integers(1, 4))):
        kinds = ["conv", "depthwise", "residual", "concat", "maxpool", "bn"]
        kind = draw(st.sampled_from(kinds + (["avgpool"] if average_pool else [])))
        if kind == "conv":
            c2 = draw(st.sampled_from([2, 4, 8]))
            x, c = b.op("Relu", [b.conv(x, c, c2)]), c2
        elif kind == "depthwise":
            x = b.op("Relu", [b.conv(x, c, c, depthwise=True)])
        elif kind == "residual":
            y = b.conv(b.op("Relu", [b.conv(x, c, c)]), c, c)
            x = b.op("Relu", [b.op("Add", [x, y])])
        elif kind == "concat":
            x = b.op("Concat", [b.conv(x, c, c), b.conv(x, c, c)], axis=1)
            c = 2 * c
        elif kind == "maxpool":
            x = b.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        elif kind == "avgpool":
            x = b.op("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        else:
            scale = b.const("bn_scale", (c, 1, 1))
            x = b.op("Add", [b.op("Mul", [x, scale]), b.const("bn_shift", (c, 1, 1))])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    head = draw(st.sampled_from(["gemm", "gemm_t", "matmul"]))
    if head == "gemm":
        y = b.op("Gemm", [x, b.const("fc", (5, c)), b.const("fcb", (5,))], transB=1)
    elif head == "gemm_t":
        y = b.op("Gemm", [x, b.const("fc", (c, 5)), b.const("fcb", (5,))])
    else:
        y = b.op("MatMul", [x, b.const("fc", (c, 5))])
    graph = helper.make_graph(
        b.nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                          ["N", channels, 6, 6])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["N", 5])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    data = np.random.default_rng(seed + 1).normal(size=(8, channels, 6, 6)).astype("f")
    return model, data


@settings(max_examples=250, **COMMON)
@given(graphs())
def test_insertion_properties(case):
    model, data = case
    before = model.SerializeToString()
    q = quantize_model(model, calibration_data=data)
    COUNT["insert"] += 1
    assert model.SerializeToString() == before
    onnx.checker.check_model(q.onnx, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in q.onnx.graph.initializer}
    pairs = qdq_pairs(q.onnx)
    assert pairs
    for p in pairs:
        s = inits[p.scale]
        assert np.all(np.isfinite(s)) and np.all(s > 0)
    # Every activation quantization point: |DQ(Q(x)) - x| <= s / 2 on the calibration data.
    acts = [p for p in pairs if not p.is_weight]
    names = list(dict.fromkeys(n for p in acts for n in (p.source, p.output)))
    fetch = [n for n in names if n != "x"]
    values = dict(zip(fetch, inference_session(with_outputs(q.onnx, fetch)).run(
        fetch, {"x": data})))
    values["x"] = data
    for p in acts:
        s = float(inits[p.scale])
        x = values[p.source]
        # Half a step inside the range; beyond it (upstream quantization can push values a
        # little past the calibrated max) the saturation distance is added.
        bound = s / 2 + np.maximum(np.abs(x) - 127 * s, 0)
        assert np.all(np.abs(values[p.output] - x) <= bound * (1 + 1e-5) + 1e-7)
    with pytest.raises(QdqError, match="already contains"):
        quantize_model(q.onnx)


@pytest.mark.training
@settings(max_examples=40, **COMMON)
@given(graphs(average_pool=False))  # onnxruntime-training cannot train AveragePool
def test_emitted_graph_equals_training_graph(case):
    from qdq_onnx.finetune import FitConfig, TrainConfig, Trainer

    model, data = case
    q = quantize_model(model, calibration_data=data)
    trainer = Trainer(q.onnx, TrainConfig(loss="mse"))
    try:
        trainer.fit(data, np.zeros((len(data), 5), np.float32),
                    FitConfig(batch_size=4, verbose=0))
        emitted = trainer.emit()
        assert trainer.check_emitted(emitted, data) == 0.0
    finally:
        trainer.close()
    COUNT["emit"] += 1


def test_report_insertion_case_count():
    # Runs after the property tests in file order: CI logs show how many cases ran.
    print(f"\nproperty cases run: insertion {COUNT['insert']}")
    assert COUNT["insert"] >= 200


@pytest.mark.training
def test_report_emit_case_count():
    print(f"\nproperty cases run: emit {COUNT['emit']}")
    assert COUNT["emit"] >= 30
