"""The gradient coverage table (scripts/gradient_coverage.py -> docs/gradient-coverage.md and
qdq_onnx/finetune/gradient_coverage.json) is current, and fine-tuning names an op
onnxruntime-training cannot differentiate in one line, before training and without the
engine's C++ signature."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.cli.main import main
from qdq_onnx.finetune import coverage
from qdq_onnx.finetune.backend.ort_backend import engine_failure

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gradient_coverage",
                                                  ROOT / "scripts" / "gradient_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_table_is_the_one_the_script_writes(script):
    import onnx as onnx_module
    import onnxruntime

    committed = json.loads((ROOT / "qdq_onnx/finetune/gradient_coverage.json").read_text())
    assert committed["onnxruntime"] == onnxruntime.__version__
    assert committed["onnx"] == onnx_module.__version__
    assert committed["rewrites"] == coverage.REWRITES  # the rewrites column is current
    wanted = [(name, opset) for name in sorted(script.PROBES)
              for opset in script._schema_versions(script.PROBES[name].get("op", name))
              if opset >= script.PROBES[name].get("min", 0)]
    assert [(r["op"], r["opset"]) for r in committed["rows"]] == wanted
    assert (ROOT / "docs/gradient-coverage.md").read_text() == script.markdown(committed)


@pytest.mark.parametrize("op,opset", [("Relu", 13), ("HardSigmoid", 11),
                                      ("Resize(nearest)", 13), ("Split", 13),
                                      ("Split(all outputs used)", 13), ("Pad(reflect)", 13)])
def test_probing_again_gives_the_committed_row(script, op, opset):
    committed = {(r["op"], r["opset"]): r for r in coverage.table()["rows"]}
    row = script._isolated(op, script.PROBES[op], opset)
    assert row["status"] == committed[(op, opset)]["status"]


def test_every_op_the_rewrites_cover_is_one_that_does_not_train():
    failing = {r["op"].split("(")[0] for r in coverage.table()["rows"]
               if r["status"] != "trains"}
    assert set(coverage.REWRITES) - {"Upsample"} <= failing | {"ReduceMax", "ReduceMin"}


def _softplus_model(path):
    """Conv -> Softplus -> Conv: Softplus has no gradient builder and no rewrite."""
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w0"),
         numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w1")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Softplus", ["c0"], ["s"], name="the_softplus"),
             helper.make_node("Conv", ["s", "w1"], ["y"], name="conv1")]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], w)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)


def test_an_op_without_a_gradient_is_named_in_one_line_before_training(tmp_path, capsys):
    _softplus_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).normal(size=(8, 3, 8, 8))
             .astype(np.float32))
    assert main(["insert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "d.npz"),
                 "-o", str(tmp_path / "q.onnx")]) == 0
    capsys.readouterr()
    # named: `auto` would train it with torch where PyTorch is installed (test_torch_backend)
    code = main(["finetune", str(tmp_path / "q.onnx"), "--data", str(tmp_path / "d.npz"),
                 "--distill", "--backend", "onnxruntime", "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "the_softplus: onnxruntime-training cannot differentiate Softplus" in err
    assert "docs/gradient-coverage.md" in err
    assert "onnxruntime_src" not in err and "::" not in err
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("raw,expected", [
    ("/onnxruntime_src/orttraining/orttraining/core/graph/gradient_builder_registry.cc:29 "
     "onnxruntime::training::GradientDef onnxruntime::training::GetGradientForOp(const "
     "GradientGraphConfiguration&, onnxruntime::Graph*, const onnxruntime::Node*, const "
     "std::unordered_set<std::__cxx11::basic_string<char> >&, const std::unordered_set<std::"
     "__cxx11::basic_string<char> >&, const onnxruntime::logging::Logger&, std::unordered_set"
     "<std::__cxx11::basic_string<char> >&) The gradient builder has not been registered: "
     "HardSigmoid for node hs_1",
     "hs_1: onnxruntime-training cannot differentiate HardSigmoid (no gradient builder)"),
    ("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
     "ResizeGrad(1) node with name 'up/Resize_Grad/ResizeGrad_0'",
     "up/Resize: onnxruntime-training cannot differentiate Resize (no CPU kernel"),
    ("/onnxruntime_src/orttraining/orttraining/training_api/module.cc:632 onnxruntime::common::"
     "Status onnxruntime::training::api::Module::TrainStep(const std::vector<OrtValue>&, std::"
     "vector<OrtValue>&) [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code "
     "returned while running Reshape node. Name:'r_Grad/Reshape_1' Status Message: /onnxruntime"
     "_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:45 onnxruntime::ReshapeHelper"
     "::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) "
     "input_shape_size == size was false.",
     "the gradient of node 'r' fails (Reshape: input_shape_size == size was false.)"),
])
def test_engine_messages_lose_the_signature_and_name_the_op(raw, expected):
    message = str(engine_failure(RuntimeError(raw), "run a training step"))
    assert expected in message
    assert "onnxruntime_src" not in message and "::" not in message and "\n" not in message
