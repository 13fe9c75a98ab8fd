"""The golden cases: small models put through the pipeline's commands. The files in
`tests/golden/files/` were written by these cases at commit 2a4c3d8 (before the settings,
façade and precision-scheme refactor); `test_golden.py` reruns them and wants the same
bytes (graph, weights, scales, metadata; the embedded plan may only gain `scheme` fields
and name its rule file by another path).

Every model and data set is built here from fixed seeds, so nothing else in the test suite
can change them."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _w(rng, inits, name, shape, scale=0.3):
    inits.append(numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name))
    return name


def cnn() -> onnx.ModelProto:
    """Conv-BN-ReLU, a residual Add, MaxPool, a depthwise conv, Concat, GAP, Gemm head."""
    rng = np.random.default_rng(11)
    inits, nodes = [], []

    def node(op, name, ins, **attrs):
        nodes.append(helper.make_node(op, ins, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    c1 = node("Conv", "c1", ["x", _w(rng, inits, "c1_w", (8, 3, 3, 3)),
                             _w(rng, inits, "c1_b", (8,), 0.1)], pads=[1, 1, 1, 1])
    bn = node("BatchNormalization", "bn1", [
        c1, _w(rng, inits, "bn1_g", (8,)), _w(rng, inits, "bn1_b", (8,), 0.1),
        _w(rng, inits, "bn1_m", (8,), 0.1), "bn1_v"])
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn1_v"))
    r1 = node("Relu", "r1", [bn])
    c2 = node("Conv", "c2", [r1, _w(rng, inits, "c2_w", (8, 8, 3, 3)),
                             _w(rng, inits, "c2_b", (8,), 0.1)], pads=[1, 1, 1, 1])
    add = node("Add", "add1", [c2, r1])
    r2 = node("Relu", "r2", [add])
    mp = node("MaxPool", "mp", [r2], kernel_shape=[2, 2], strides=[2, 2])
    dw = node("Conv", "dw", [mp, _w(rng, inits, "dw_w", (8, 1, 3, 3))], group=8,
              pads=[1, 1, 1, 1])
    r3 = node("Relu", "r3", [dw])
    c3 = node("Conv", "c3", [mp, _w(rng, inits, "c3_w", (4, 8, 1, 1))])
    cat = node("Concat", "cat", [r3, c3], axis=1)
    gap = node("GlobalAveragePool", "gap", [cat])
    fl = node("Flatten", "flat", [gap])
    fc = node("Gemm", "fc", [fl, _w(rng, inits, "fc_w", (10, 12)),
                             _w(rng, inits, "fc_b", (10,), 0.1)], transB=1)
    nodes[-1].output[0] = "logits"
    del fc
    graph = helper.make_graph(
        nodes, "golden_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            [None, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def mlp() -> onnx.ModelProto:
    """MatMul + Add + ReLU layers (Keras Dense as tf2onnx writes it)."""
    rng = np.random.default_rng(12)
    inits, nodes, prev = [], [], "x"
    dims = [16, 24, 24, 5]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        _w(rng, inits, f"w{i}", (a, b), np.sqrt(2 / a))
        _w(rng, inits, f"b{i}", (b,), 0.05)
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"bias{i}")]
        prev = f"a{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    nodes[-1].output[0] = "out"
    graph = helper.make_graph(
        nodes, "golden_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 5])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def attention() -> onnx.ModelProto:
    """One self-attention block: LayerNormalization, Q/K/V MatMuls, scaled Softmax, output
    projection and a residual Add (opset 17)."""
    rng = np.random.default_rng(13)
    inits, nodes = [], []
    d, t = 16, 8

    def node(op, name, ins, **attrs):
        nodes.append(helper.make_node(op, ins, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    ln = node("LayerNormalization", "ln", ["x", "ln_g", "ln_b"], axis=-1)
    inits += [numpy_helper.from_array(np.ones(d, np.float32), "ln_g"),
              numpy_helper.from_array(np.zeros(d, np.float32), "ln_b")]
    q = node("MatMul", "q", [ln, _w(rng, inits, "wq", (d, d), 0.25)])
    k = node("MatMul", "k", [ln, _w(rng, inits, "wk", (d, d), 0.25)])
    v = node("MatMul", "v", [ln, _w(rng, inits, "wv", (d, d), 0.25)])
    kt = node("Transpose", "kt", [k], perm=[0, 2, 1])
    s = node("MatMul", "qk", [q, kt])
    inits.append(numpy_helper.from_array(np.array(0.25, np.float32), "inv_sqrt_d"))
    s = node("Mul", "scale", [s, "inv_sqrt_d"])
    p = node("Softmax", "softmax", [s], axis=-1)
    a = node("MatMul", "pv", [p, v])
    o = node("MatMul", "proj", [a, _w(rng, inits, "wo", (d, d), 0.25)])
    node("Add", "res", [o, "x"])
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, "golden_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, t, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, t, d])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


SPEC = """\
mode: partial
layers:
  - node: c2
  - node: fc
"""


def write_inputs(folder: Path) -> None:
    """The float models and data the cases read."""
    rng = np.random.default_rng(21)
    onnx.save(cnn(), folder / "cnn.onnx")
    onnx.save(mlp(), folder / "mlp.onnx")
    onnx.save(attention(), folder / "attention.onnx")
    x = rng.normal(size=(96, 3, 8, 8)).astype(np.float32)
    np.savez(folder / "cnn_calib.npz", x=x[:48])
    np.savez(folder / "cnn_train.npz", x=x, labels=rng.integers(0, 10, 96))
    xm = rng.normal(size=(128, 16)).astype(np.float32)
    np.savez(folder / "mlp_train.npz", x=xm, labels=rng.integers(0, 5, 128))
    np.savez(folder / "attention_calib.npz", x=rng.normal(size=(32, 8, 16)).astype(np.float32))
    (folder / "spec.yaml").write_text(SPEC)
    # The cases predate issue 27's PTQ policy (the cost model, the accuracy guard, scale
    # refinement, mse by default), which changes what the defaults write on purpose: they
    # run the bundled rules without those sections and name max, so they still check that
    # nothing else moved (the new defaults are tested in tests/quantize and tests/placement).
    from qdq_onnx.files.yaml_lines import load_yaml
    from qdq_onnx.placement.rules import bundled_rule_files

    doc = load_yaml(bundled_rule_files()["tensorrt"])
    for key in PTQ_POLICY:
        doc.pop(key, None)
    (folder / PRE_POLICY_RULES).parent.mkdir(exist_ok=True)
    (folder / PRE_POLICY_RULES).write_text(json.dumps(doc, default=list))


PTQ_POLICY = ("cost", "accuracy_guard", "scale_refinement")
PRE_POLICY_RULES = "before-ptq-policy/tensorrt.yaml"  # the bundled file's name: recorded


def _cli(*argv: str) -> None:
    from qdq_onnx.cli.main import main

    # The golden files hold an FP32 remainder (they predate its typing, which is checked in
    # tests/precision): the FP32 path must still write exactly what it wrote.
    argv = (*argv, "--high-precision", "fp32")
    if argv[0] == "insert" and "--rules" not in argv:
        argv = (*argv, "--rules", Path(argv[1]).parent / PRE_POLICY_RULES)
    if argv[0] in ("insert", "calibrate") and not {"--calib-method", "--method"} & set(argv) \
            and {"--calib", "--data"} & set(argv):
        argv = (*argv, "--calib-method" if argv[0] == "insert" else "--method", "max")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main([str(a) for a in argv])
    if rc != 0:
        raise AssertionError(f"qdq-onnx {' '.join(map(str, argv))} exited {rc}")


def _python_low_bits(d: Path) -> None:
    from qdq_onnx import quantize_model

    calib = np.load(d / "cnn_calib.npz")["x"]
    train = np.load(d / "cnn_train.npz")
    q = quantize_model(onnx.load(d / "cnn.onnx"), calibration_data=calib, weight_bits=4,
                       rules=str(d / PRE_POLICY_RULES), calibration_method="max")
    q.save(d / "py_w4_ptq.onnx", high_precision="fp32")
    q.compile(learning_rate=1e-3, schedule="constant")
    q.fit(train["x"], train["labels"], batch_size=16, epochs=1, verbose=0)
    q.save(d / "py_w4_qat.onnx", high_precision="fp32")


def _python_default(d: Path) -> None:
    from qdq_onnx import quantize_model

    calib = np.load(d / "mlp_train.npz")
    q = quantize_model(onnx.load(d / "mlp.onnx"), calibration_data=calib["x"][:64],
                       calibration_method="entropy", rules=str(d / PRE_POLICY_RULES))
    q.compile(optimizer="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=2)
    q.fit(calib["x"], calib["labels"], batch_size=32, epochs=2, validation_split=0.25,
          verbose=0)
    q.save(d / "py_mlp_qat.onnx", high_precision="fp32")


# name -> (function of the work folder, the output files it writes)
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "insert_max": (lambda d: _cli("insert", d / "cnn.onnx", "-o", d / "insert_max.onnx",
                                  "--calib", d / "cnn_calib.npz"), ("insert_max.onnx",)),
    "insert_entropy": (lambda d: _cli("insert", d / "cnn.onnx", "-o", d / "insert_entropy.onnx",
                                      "--calib", d / "cnn_calib.npz", "--calib-method",
                                      "entropy"), ("insert_entropy.onnx",)),
    "insert_percentile": (lambda d: _cli("insert", d / "cnn.onnx", "-o",
                                         d / "insert_percentile.onnx", "--calib",
                                         d / "cnn_calib.npz", "--calib-method", "percentile",
                                         "--percentile", "99.9"),
                          ("insert_percentile.onnx",)),
    "insert_mse": (lambda d: _cli("insert", d / "cnn.onnx", "-o", d / "insert_mse.onnx",
                                  "--calib", d / "cnn_calib.npz", "--calib-method", "mse"),
                   ("insert_mse.onnx",)),
    "insert_placeholder": (lambda d: _cli("insert", d / "cnn.onnx", "-o",
                                          d / "insert_placeholder.onnx"),
                           ("insert_placeholder.onnx",)),
    "insert_toolkit_rules": (lambda d: _cli("insert", d / "cnn.onnx", "-o",
                                            d / "insert_toolkit.onnx", "--rules",
                                            "nvidia-tf-toolkit", "--calib",
                                            d / "cnn_calib.npz"), ("insert_toolkit.onnx",)),
    "insert_partial_spec": (lambda d: _cli("insert", d / "cnn.onnx", "-o",
                                           d / "insert_spec.onnx", "--spec", d / "spec.yaml"),
                            ("insert_spec.onnx",)),
    "insert_attention": (lambda d: _cli("insert", d / "attention.onnx", "-o",
                                        d / "insert_attention.onnx", "--calib",
                                        d / "attention_calib.npz"),
                         ("insert_attention.onnx",)),
    "calibrate_entropy": (lambda d: (_cli("insert", d / "cnn.onnx", "-o", d / "ph.onnx"),
                                     _cli("calibrate", d / "ph.onnx", "--data",
                                          d / "cnn_calib.npz", "--method", "entropy", "-o",
                                          d / "calibrate_entropy.onnx")),
                          ("calibrate_entropy.onnx",)),
    "finetune_cnn": (lambda d: (_cli("insert", d / "cnn.onnx", "-o", d / "q.onnx", "--calib",
                                     d / "cnn_calib.npz"),
                                _cli("finetune", d / "q.onnx", "--data", d / "cnn_train.npz",
                                     "-o", d / "finetune_cnn.onnx", "--epochs", "2",
                                     "--batch-size", "16", "--lr", "1e-3", "--quiet")),
                     ("finetune_cnn.onnx",)),
    "finetune_learn_scales_sgd": (
        lambda d: (_cli("insert", d / "cnn.onnx", "-o", d / "q2.onnx", "--calib",
                        d / "cnn_calib.npz"),
                   _cli("finetune", d / "q2.onnx", "--data", d / "cnn_train.npz", "-o",
                        d / "finetune_sgd.onnx", "--optimizer", "sgd", "--lr", "1e-2",
                        "--learn-scales", "--schedule", "step", "--batch-size", "32",
                        "--epochs", "2", "--validation-split", "0.25", "--quiet")),
        ("finetune_sgd.onnx",)),
    "python_weight_bits_4": (_python_low_bits, ("py_w4_ptq.onnx", "py_w4_qat.onnx")),
    "python_mlp": (_python_default, ("py_mlp_qat.onnx",)),
}
