"""Which ONNX ops onnxruntime-training (the installed version, CPU) can differentiate:
op by op over the default domain, at every schema version in force between opsets 11 and 21,
build a one-node model whose float operands are trainable initializers, ask
onnxruntime-training for its gradient graph, run one step and compare the gradient with a
central finite difference. Writes qdq_onnx/finetune/gradient_coverage.json (read by the
fine-tuning pre-check, qdq_onnx.finetune.coverage) and docs/gradient-coverage.md.

    .venv/bin/python scripts/gradient_coverage.py            # the whole table (~2 minutes)
    .venv/bin/python scripts/gradient_coverage.py --ops Resize HardSigmoid --print

tests/finetune/test_gradient_coverage.py checks the committed table is the one this writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JSON_OUT = ROOT / "qdq_onnx" / "finetune" / "gradient_coverage.json"
MD_OUT = ROOT / "docs" / "gradient-coverage.md"
OPSETS = range(11, 22)
X = (2, 3, 4, 4)

# op -> probe: "in" lists the inputs: ("x", shape) a trainable float operand, ("data", shape)
# a float graph input (an activation, fed at each call, not trained), ("pos", shape)
# one with positive values, ("unit", shape) one within (-0.9, 0.9), ("i", values) an int64
# constant, ("f", values) a float constant, ("", None) an omitted optional input; "attrs"
# the attributes; "min": the first opset the probe is valid at (an input became an input).
UNARY = ["Abs", "Neg", "Relu", "Sigmoid", "Tanh", "Exp", "Softplus", "Softsign", "Elu",
         "Selu", "Erf", "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh", "Identity",
         "LeakyRelu", "ThresholdedRelu", "HardSigmoid", "HardSwish", "Celu", "Mish",
         "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Gelu"]
POSITIVE = ["Log", "Sqrt", "Acosh"]
UNIT = ["Acos", "Asin", "Atanh"]
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"]
REDUCE = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
          "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
PROBES: dict[str, dict] = {
    **{op: {"in": [("x", X)]} for op in UNARY},
    **{op: {"in": [("pos", X)]} for op in POSITIVE},
    **{op: {"in": [("unit", X)]} for op in UNIT},
    **{op: {"in": [("x", X), ("x", X)]} for op in BINARY},
    "Pow": {"in": [("pos", X), ("f", 2.0)]},  # its exponent's gradient is not implemented
    "PRelu": {"in": [("x", X), ("x", (3, 1, 1))]},
    **{op: {"in": [("pos" if "Log" in op and "Exp" not in op else "x", X)],
            "attrs": {"axes": [2, 3]}, "axes_input_from": 18 if op != "ReduceSum" else 13}
       for op in REDUCE},
    "Clip": {"in": [("x", X), ("f", -0.3), ("f", 0.4)]},
    "Softmax": {"in": [("x", X)], "attrs": {"axis": -1}},
    "LogSoftmax": {"in": [("x", X)], "attrs": {"axis": -1}},
    "Hardmax": {"in": [("x", X)]},
    "MatMul": {"in": [("x", (2, 3, 4)), ("x", (4, 5))]},
    "Gemm": {"in": [("x", (3, 4)), ("x", (5, 4)), ("x", (5,))], "attrs": {"transB": 1}},
    "Conv": {"in": [("x", X), ("x", (2, 3, 3, 3)), ("x", (2,))], "attrs": {"pads": [1] * 4}},
    "ConvTranspose": {"in": [("x", X), ("x", (3, 2, 3, 3))], "attrs": {"strides": [2, 2]}},
    "MaxPool": {"in": [("x", X)], "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
    "MaxPool(with indices)": {"op": "MaxPool", "in": [("x", X)], "outputs": 2, "min": 12,
                              "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
    "AveragePool": {"in": [("x", X)], "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
    "LpPool": {"in": [("x", X)], "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
    "GlobalAveragePool": {"in": [("x", X)]},
    "GlobalMaxPool": {"in": [("x", X)]},
    "GlobalLpPool": {"in": [("x", X)]},
    "BatchNormalization": {"in": [("x", X), ("x", (3,)), ("x", (3,)), ("f", [0.1, 0.2, 0.3]),
                                  ("f", [1.0, 1.5, 2.0])]},
    "InstanceNormalization": {"in": [("x", X), ("x", (3,)), ("x", (3,))]},
    "LayerNormalization": {"in": [("x", X), ("x", (4,)), ("x", (4,))], "attrs": {"axis": -1}},
    "LayerNormalization(all outputs)": {"op": "LayerNormalization", "outputs": 3,
                                        "in": [("x", X), ("x", (4,)), ("x", (4,))],
                                        "attrs": {"axis": -1}},
    "GroupNormalization": {"in": [("x", X), ("x", (3,)), ("x", (3,))],
                           "attrs": {"num_groups": 3}},
    "LRN": {"in": [("x", X)], "attrs": {"size": 3}},
    "MeanVarianceNormalization": {"in": [("x", X)]},
    "LpNormalization": {"in": [("x", X)]},
    "Dropout": {"in": [("x", X)]},
    "Reshape": {"in": [("x", X), ("i", [2, -1])]},
    "Flatten": {"in": [("x", X)]},
    "Transpose": {"in": [("x", X)], "attrs": {"perm": [0, 2, 3, 1]}},
    "Squeeze": {"in": [("x", (2, 1, 4)), ("i", [1])], "axes_attr_before": 13},
    "Unsqueeze": {"in": [("x", (2, 4)), ("i", [1])], "axes_attr_before": 13},
    "Concat": {"in": [("x", X), ("x", X)], "attrs": {"axis": 1}},
    "Split": {"in": [("x", X)], "attrs": {"axis": 1}, "outputs": 3, "num_outputs_from": 18},
    "Split(all outputs used)": {"op": "Split", "in": [("x", X)], "attrs": {"axis": 1},
                                "outputs": 3, "num_outputs_from": 18, "use_all": True},
    "Slice": {"in": [("x", X), ("i", [1]), ("i", [3]), ("i", [2])]},
    "Gather": {"in": [("x", X), ("i", [2, 0])], "attrs": {"axis": 1}},
    "GatherElements": {"in": [("x", (3, 4)), ("i", [[0, 1, 2, 0]] * 3)], "attrs": {"axis": 1}},
    "GatherND": {"in": [("x", (3, 4)), ("i", [[0, 1], [2, 3]])]},
    "Expand": {"in": [("x", (3, 1)), ("i", [2, 3, 4])]},
    "Tile": {"in": [("x", (2, 3)), ("i", [2, 2])]},
    "Pad": {"in": [("x", X), ("i", [0, 0, 1, 1, 0, 0, 1, 1])], "attrs": {"mode": "constant"}},
    "Pad(reflect)": {"op": "Pad", "in": [("x", X), ("i", [0, 0, 1, 1, 0, 0, 1, 1])],
                     "attrs": {"mode": "reflect"}},
    "Pad(edge)": {"op": "Pad", "in": [("x", X), ("i", [0, 0, 1, 1, 0, 0, 1, 1])],
                  "attrs": {"mode": "edge"}},
    "Resize(nearest)": {"op": "Resize", "in": [("x", X), ("", None), ("f", [1, 1, 2, 2])],
                        "attrs": {"mode": "nearest"}, "min": 13},
    "Resize(linear)": {"op": "Resize", "in": [("x", X), ("", None), ("f", [1, 1, 2, 2])],
                       "attrs": {"mode": "linear"}, "min": 13},
    "Where": {"in": [("b", [[True, False, True, False]]), ("x", (3, 4)), ("x", (3, 4))]},
    "CumSum": {"in": [("x", (3, 4)), ("i", 1)]},
    "Einsum": {"in": [("x", (2, 3)), ("x", (3, 4))], "attrs": {"equation": "ij,jk->ik"}},
    "TopK": {"in": [("x", (3, 4)), ("i", [2])], "outputs": 2},
    "DepthToSpace": {"in": [("x", (1, 4, 2, 2))], "attrs": {"blocksize": 2}},
    "SpaceToDepth": {"in": [("x", (1, 1, 4, 4))], "attrs": {"blocksize": 2}},
    "Shrink": {"in": [("x", X)], "attrs": {"lambd": 0.1}},
    "LSTM": {"in": [("data", (3, 2, 4)), ("x", (1, 20, 4)), ("x", (1, 20, 5))],
             "attrs": {"hidden_size": 5}, "outputs": 3},
    "LSTM(initial states)": {"op": "LSTM", "in": [
        ("data", (3, 2, 4)), ("x", (1, 20, 4)), ("x", (1, 20, 5)), ("x", (1, 40)), ("", None),
        ("f", np.zeros((1, 2, 5))), ("f", np.zeros((1, 2, 5)))],
             "attrs": {"hidden_size": 5}, "outputs": 3},
    "GRU": {"in": [("data", (3, 2, 4)), ("x", (1, 15, 4)), ("x", (1, 15, 5))],
            "attrs": {"hidden_size": 5}, "outputs": 2},
    "GRU(initial state)": {"op": "GRU", "in": [
        ("data", (3, 2, 4)), ("x", (1, 15, 4)), ("x", (1, 15, 5)), ("x", (1, 30)), ("", None),
        ("f", np.zeros((1, 2, 5)))],
            "attrs": {"hidden_size": 5}, "outputs": 2},
    "RNN": {"in": [("data", (3, 2, 4)), ("x", (1, 5, 4)), ("x", (1, 5, 5))],
            "attrs": {"hidden_size": 5}, "outputs": 2},
}


def _schema_versions(op: str) -> list[int]:
    """The opsets in 11-21 at which a new version of `op`'s schema takes effect (11 first)."""
    from onnx import defs

    versions = []
    for opset in OPSETS:
        try:
            since = defs.get_schema(op, opset, "").since_version
        except Exception:  # noqa: BLE001 - not defined at this opset
            continue
        if not versions or since != versions[-1][1]:
            versions.append((opset, since))
    return [opset for opset, _ in versions]


def _value(kind: str, shape, rng: np.random.Generator) -> np.ndarray:
    if kind == "pos":
        return rng.uniform(1.2, 2.0, shape).astype(np.float32)
    if kind == "unit":
        return rng.uniform(-0.8, 0.8, shape).astype(np.float32)
    # away from 0 and from each other, where kinks and ties are
    magnitude = rng.uniform(0.2, 1.0, shape)
    return (magnitude * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def _model(name: str, probe: dict, opset: int, rng: np.random.Generator):
    """(loss model, trainable names, frozen names) for `probe` at `opset`: the op's first
    output weighted by fixed random numbers and summed."""
    import onnx
    from onnx import helper, numpy_helper

    op = probe.get("op", name)
    inits, trainable, frozen, inputs = [], [], [], []
    feeds: dict[str, np.ndarray] = {}
    attrs = dict(probe.get("attrs", {}))
    specs = list(probe["in"])
    if "axes_attr_before" in probe and opset < probe["axes_attr_before"]:
        attrs["axes"] = list(specs.pop()[1])
    if "axes_input_from" in probe and opset >= probe["axes_input_from"]:
        specs.append(("i", attrs.pop("axes")))
    if "num_outputs_from" in probe and opset >= probe["num_outputs_from"]:
        attrs["num_outputs"] = probe["outputs"]
    if op == "Pad" and opset < 11:
        attrs["pads"] = list(specs.pop()[1])
    for k, (kind, spec) in enumerate(specs):
        tname = f"in{k}"
        if kind == "":
            inputs.append("")
            continue
        if kind == "i":
            arr = np.array(spec, np.int64)
        elif kind == "f":
            arr = np.array(spec, np.float32)
        elif kind == "b":
            arr = np.array(spec, bool)
        else:
            arr = _value("x" if kind == "data" else kind, spec, rng)
        inputs.append(tname)
        if kind == "data":
            feeds[tname] = arr
            continue
        inits.append(numpy_helper.from_array(arr, tname))
        (trainable if kind in ("x", "pos", "unit") else frozen).append(tname)
    outputs = [f"out{j}" for j in range(probe.get("outputs", 1))]
    node = helper.make_node(op, inputs, outputs, name="probe", **attrs)
    data_in = [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v.shape))
               for k, v in feeds.items()]
    probe_graph = helper.make_graph([node], "p", data_in, [helper.make_tensor_value_info(
        outputs[0], onnx.TensorProto.FLOAT, None)], inits)
    m = helper.make_model(probe_graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    shape = onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.output[0]
    dims = [d.dim_value for d in shape.type.tensor_type.shape.dim]
    weights = numpy_helper.from_array(rng.uniform(0.5, 1.5, dims).astype(np.float32), "r")
    loss_nodes = [node, helper.make_node("Mul", [outputs[0], "r"], ["weighted"]),
                  helper.make_node("ReduceSum", ["weighted"], ["loss0"], keepdims=0)]
    terms = ["loss0"]
    if probe.get("use_all"):
        for j, out in enumerate(outputs[1:], 1):
            loss_nodes += [helper.make_node("Mul", [out, "r"], [f"weighted{j}"]),
                           helper.make_node("ReduceSum", [f"weighted{j}"], [f"loss{j}"],
                                            keepdims=0)]
            terms.append(f"loss{j}")
    total = terms[0]
    for j, term in enumerate(terms[1:], 1):  # Add: Sum has no gradient builder
        loss_nodes.append(helper.make_node("Add", [total, term], [f"total{j}"]))
        total = f"total{j}"
    loss_nodes.append(helper.make_node("Identity", [total], ["loss"]))
    data = [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v.shape))
            for k, v in feeds.items()]
    graph = helper.make_graph(loss_nodes, "p", data, [helper.make_tensor_value_info(
        "loss", onnx.TensorProto.FLOAT, [])], [*inits, weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model, trainable, frozen + ["r"], feeds


def _loss(model, values: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in values:
            t.CopyFrom(numpy_helper.from_array(values[t.name], t.name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return float(s.run(None, feeds)[0])


def _first_line(exc: BaseException) -> str:
    """The useful part of an onnxruntime message (after its C++ signature)."""
    text = " ".join(str(exc).split())
    for marker in ("not been registered:", "implementation for", "ONNXRuntimeError] :",
                   "Status Message:", ".cc:", "Error"):
        if marker in text:
            text = text[text.index(marker):]
            break
    if ") const " in text:
        text = text.split(") const ", 1)[1]
    return text[:160]


def _difference(model, feeds, name: str, flat: np.ndarray, shape, i: int, eps: float
                ) -> float:
    """Central finite difference of the loss along element `i` of operand `name`."""
    up, down = flat.copy(), flat.copy()
    up[i] += eps
    down[i] -= eps
    return (_loss(model, {name: up.reshape(shape)}, feeds) -
            _loss(model, {name: down.reshape(shape)}, feeds)) / (2 * eps)


def probe(name: str, spec: dict, opset: int) -> dict:
    """One row: does onnxruntime-training build, run and get right the gradient of `name`
    at `opset`?"""
    from qdq_onnx.finetune.backend import ort_imports
    from qdq_onnx.progress import captured_stderr

    rng = np.random.default_rng(sum(map(ord, name)) * 100 + opset)
    row = {"op": name, "opset": opset}
    try:
        model, trainable, frozen, feeds = _model(name, spec, opset, rng)
    except Exception as exc:  # noqa: BLE001 - the probe itself is not valid here
        row.update(status="not probed", detail=_first_line(exc))
        return row
    art, api = ort_imports.artifacts(), ort_imports.api()
    with tempfile.TemporaryDirectory() as work:
        try:
            with captured_stderr():  # its graph transformers log at INFO
                art.generate_artifacts(model, requires_grad=trainable, frozen_params=frozen,
                                       loss=None, optimizer=art.OptimType.SGD,
                                       artifact_directory=work)
        except Exception as exc:  # noqa: BLE001 - what the table records
            row.update(status="no gradient", detail=_first_line(exc))
            return row
        try:
            state = api.CheckpointState.load_checkpoint(f"{work}/checkpoint")
            module = api.Module(f"{work}/training_model.onnx", state,
                                f"{work}/eval_model.onnx", device="cpu")
            module.train()
            module(*[feeds[i] for i in module.input_names()])
            grads = {t: np.array(state.parameters[t].grad) for t in trainable}
            values = {t: np.array(state.parameters[t].data) for t in trainable}
        except Exception as exc:  # noqa: BLE001
            row.update(status="fails to run", detail=_first_line(exc))
            return row
    worst = 0.0
    eps = 1e-2
    for t in trainable:
        base = values[t]
        flat = base.reshape(-1)
        for i in range(min(flat.size, 24)):
            fd = _difference(model, feeds, t, flat, base.shape, i, eps)
            if abs(fd - _difference(model, feeds, t, flat, base.shape, i, eps / 4)) > \
                    0.02 * max(1.0, abs(fd)):
                continue  # within a step of a kink (Clip's bounds, a tie of Max)
            g = float(grads[t].reshape(-1)[i]) if grads[t].size == flat.size else float("nan")
            worst = max(worst, abs(g - fd) / max(1.0, abs(fd)))
    if not np.isfinite(worst) or worst > 0.05:
        row.update(status="wrong gradient", detail=f"max relative error {worst:.3g} against "
                   "a central finite difference")
    else:
        row.update(status="trains", detail=f"max relative error {worst:.1e}")
    return row


def _isolated(name: str, spec: dict, opset: int) -> dict:
    """`probe` in a forked child: some gradients kill the process (AveragePoolGrad with
    padding dies of SIGFPE), which the table records instead of dying with it."""
    import os
    import signal

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one probe, its row on the pipe
        os.close(read)
        try:
            row = probe(name, spec, opset)
        except Exception as exc:  # noqa: BLE001
            row = {"op": name, "opset": opset, "status": "not probed", "detail": str(exc)}
        os.write(write, json.dumps(row).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        return {"op": name, "opset": opset, "status": "crashes the process",
                "detail": f"the training step dies of {sig}"}
    return json.loads(b"".join(chunks))


def _rewrites() -> dict[str, str]:
    from qdq_onnx.finetune.coverage import REWRITES

    return dict(REWRITES)


def table(ops: list[str]) -> list[dict]:
    import onnx

    rows = []
    for name in ops:
        spec = PROBES[name]
        for opset in _schema_versions(spec.get("op", name)):
            if opset < spec.get("min", 0):
                continue
            rows.append(_isolated(name, spec, opset))
            print(f"{name:22s} {opset:3d} {rows[-1]['status']}", file=sys.stderr)
    del onnx
    return rows


def markdown(result: dict) -> str:
    rewrites = result["rewrites"]
    lines = [
        "# Gradient coverage of onnxruntime-training",
        "",
        f"Generated by `scripts/gradient_coverage.py` with onnxruntime-training "
        f"{result['onnxruntime']} (CPU) and onnx {result['onnx']}; do not edit by hand "
        "(`tests/finetune/test_gradient_coverage.py` fails when it is stale).",
        "",
        "Each row is one ONNX op at each opset between 11 and 21 where a new version of its "
        "definition takes effect: a one-node model whose float operands are trainable, its "
        "gradient graph built by onnxruntime-training, one step run, and the gradient "
        "compared with a central finite difference (step 0.01, up to 24 elements per "
        "operand, 5% relative tolerance). *qdq-onnx* says what fine-tuning does with an op "
        "that does not train: the exact rewrite it trains in its place (the emitted file "
        "keeps the original op).",
        "",
        "| op | opset | onnxruntime-training | detail | qdq-onnx |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        op = r["op"].split("(")[0]
        fix = rewrites.get(op, "") if r["status"] != "trains" else ""
        detail = r["detail"].replace("|", "\\|")
        lines.append(f"| {r['op']} | {r['opset']} | {r['status']} | {detail} | {fix} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="*", help="only these probes (default: all)")
    p.add_argument("--print", action="store_true", help="print the rows, write nothing")
    args = p.parse_args(argv)
    import onnx
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
    rows = table(args.ops or sorted(PROBES))
    result = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
              "rewrites": _rewrites(), "rows": rows}
    if args.print:
        print(json.dumps(rows, indent=1))
        return 0
    JSON_OUT.write_text(json.dumps(result, indent=1) + "\n")
    MD_OUT.parent.mkdir(exist_ok=True)
    MD_OUT.write_text(markdown(result))
    print(f"wrote {JSON_OUT.relative_to(ROOT)} and {MD_OUT.relative_to(ROOT)}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
