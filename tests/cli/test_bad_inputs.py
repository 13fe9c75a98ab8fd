"""The catalogue of bad inputs: each gets a one-line message naming the problem, exit code 2,
no traceback, no output file, and the input left untouched. The docs' table lists the
same ids (checked below)."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import G
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main

TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def _float_model(opset=13, input_shape=(1, 3, 8, 8), width=4):
    g = G(input_shape=input_shape, opset=opset)
    a = g.unary("Relu", "r0", g.conv("c0", "x", width))
    return g.model([g.binary("Add", "add", a, g.conv("c1", a, width))])


def _mlp():
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _fixed_reshape():
    """x [N, 4] -> Reshape to a constant [3, 4] -> MatMul: runs only at batch 3."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    shape = numpy_helper.from_array(np.array([3, 4], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["h"], name="flatten"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
                          [w, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.model = root / "model.onnx"
        onnx.save(_float_model(), self.model)
        self.qdq = root / "qdq.onnx"
        onnx.save(quantize_model(_float_model()).onnx, self.qdq)
        self.mlp_qdq = root / "mlp_qdq.onnx"
        onnx.save(quantize_model(_mlp()).onnx, self.mlp_qdq)
        self.data = root / "data.npz"
        np.savez(self.data, x=np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype("f"))
        self.train = root / "train.npz"
        np.savez(self.train, x=np.ones((8, 4), np.float32), labels=np.arange(8) % 3)
        self.out = root / "out.onnx"

    def file(self, name: str, content: bytes) -> str:
        p = self.root / name
        p.write_bytes(content)
        return str(p)

    def yaml(self, name: str, text: str) -> str:
        return self.file(name, text.encode())

    def npz(self, name: str, **arrays) -> str:
        p = self.root / name
        np.savez(p, **arrays)
        return str(p)

    def onnx(self, name: str, model: onnx.ModelProto) -> str:
        p = self.root / name
        onnx.save(model, p)
        return str(p)


def _external(env: Env, location: str) -> str:
    m = _float_model()
    t = m.graph.initializer[0]
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.external_data.add(key="location", value=location)
    return env.onnx(f"ext_{abs(hash(location)) % 1000}.onnx", m)


def _opset(env, version):
    m = _float_model()
    m.opset_import[0].version = version
    return env.onnx(f"opset{version}.onnx", m)


def _relu_only(env):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "r",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return env.onnx("relu.onnx", helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 13)]))


def _pickled(env):
    p = env.root / "objects.npy"
    np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return str(p)


def _plan_for_other_model(env):
    plan = env.root / "plan.json"
    assert main(["insert", str(env.model), "-o", str(env.root / "tmp.onnx"), "--plan",
                 str(plan)]) == 0
    data = json.loads(plan.read_text())
    data["placements"][0]["consumer"] = "not_a_node"
    plan.write_text(json.dumps(data))
    return str(plan)


def _other_checkpoint(env):
    ck = env.root / "ck_other"
    assert main(["finetune", str(env.mlp_qdq), "--data", str(env.train), "-o",
                 str(env.root / "ft.onnx"), "--checkpoint-dir", str(ck), "--quiet"]) == 0
    other = _mlp()
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3), "f") * 2, "w"))
    other.graph.node[0].name = "renamed"
    return env.onnx("other_qdq.onnx", quantize_model(other).onnx), str(ck)


def _broken(env, name, edit):
    m = _float_model()
    edit(m)
    return env.onnx(name, m)


def _cycle(m):
    next(n for n in m.graph.node if n.name == "c0").input[0] = "add_out"  # c0 <- ... <- add


def _truncate_weight(m):
    t = next(t for t in m.graph.initializer if t.name == "c1_w")
    t.raw_data = t.raw_data[:40]


def _poison(value):
    def edit(m):
        t = next(t for t in m.graph.initializer if t.name == "c1_w")
        v = numpy_helper.to_array(t).copy()
        v.flat[5] = value
        t.CopyFrom(numpy_helper.from_array(v, t.name))
    return edit


def _qdq_with_nan(env):
    m = onnx.load(env.qdq)
    t = next(t for t in m.graph.initializer if t.name == "c1_w")
    v = numpy_helper.to_array(t).copy()
    v.flat[0] = np.nan
    t.CopyFrom(numpy_helper.from_array(v, t.name))
    return env.onnx("qdq_nan.onnx", m)


def _folder(env, name):
    folder = env.root / name
    folder.mkdir(exist_ok=True)
    return str(folder)


def _report_with(env, name: str, sensitivity_json: str) -> list[str]:
    return ["report", str(env.qdq), "-o", "{out}", "--sensitivity",
            env.yaml(name, sensitivity_json)]


def _val(env):
    return env.npz("val.npz", x=np.ones((8, 3, 8, 8), np.float32), labels=np.arange(8) % 4)


# id, description (for the docs), argv builder, expected message fragment
CASES = [
    ("empty-file", "empty file", lambda e: ["insert", e.file("e.onnx", b""), "-o", "{out}"],
     "the file is empty"),
    ("not-protobuf", "not a protobuf",
     lambda e: ["insert", e.file("t.onnx", b"\x08\x07garbage\xff\xff"), "-o", "{out}"],
     "not an ONNX model"),
    ("truncated", "truncated ONNX file",
     lambda e: ["insert", e.file("cut.onnx", e.model.read_bytes()[:300]), "-o", "{out}"],
     "not an ONNX model"),
    ("missing-file", "input path does not exist",
     lambda e: ["insert", str(e.root / "nope.onnx"), "-o", "{out}"], "no such file"),
    ("folder-as-model", "a folder given as the model",
     lambda e: ["insert", str(e.root), "-o", "{out}"], "is a folder"),
    ("missing-external-data", "missing external-data file",
     lambda e: ["insert", _external(e, "weights.bin"), "-o", "{out}"],
     "external data file 'weights.bin' is missing"),
    ("external-data-escape", "external-data location outside the model folder",
     lambda e: ["insert", _external(e, "../../etc/passwd"), "-o", "{out}"],
     "points outside the model's folder"),
    ("opset-too-new", "opset newer than supported",
     lambda e: ["insert", _opset(e, 23), "-o", "{out}"], "supports opsets 13-21"),
    ("opset-too-old", "opset below 7 (cannot be upgraded)",
     lambda e: ["insert", _opset(e, 6), "-o", "{out}"], "cannot be upgraded"),
    ("nothing-to-quantize", "model with no quantizable op",
     lambda e: ["insert", _relu_only(e), "-o", "{out}"], "nothing to quantize"),
    ("already-quantized", "already-quantized model",
     lambda e: ["insert", str(e.qdq), "-o", "{out}"], "already contains QuantizeLinear"),
    ("output-is-input", "output path equal to the input",
     lambda e: ["insert", str(e.model), "-o", str(e.model)], "is the input file"),
    ("output-folder-missing", "output folder does not exist",
     lambda e: ["insert", str(e.model), "-o", str(e.root / "no" / "dir" / "o.onnx")],
     "does not exist"),
    ("spec-unknown-name", "spec names an unknown layer",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--spec",
                e.yaml("s1.yaml", "layers:\n  - name: c2\n")], "no layer named 'c2'"),
    ("spec-unknown-class", "spec names an unknown class",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--spec",
                e.yaml("s2.yaml", "layers:\n  - class: Conv2d\n")], "no layer of class"),
    ("spec-unknown-key", "spec entry with an unknown key",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--spec",
                e.yaml("s3.yaml", "layers:\n  - name: c0\n    quantise_input: true\n")],
     "unknown key 'quantise_input'"),
    ("spec-index-range", "quantization_index out of range",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--spec",
                e.yaml("s4.yaml", "layers:\n  - name: add\n    quantization_index: [3]\n")],
     "out of range"),
    ("spec-contradiction", "contradictory spec entries",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--spec",
                e.yaml("s5.yaml", "layers:\n  - name: c0\n  - name: c0\n"
                                  "    quantize_input: false\n")], "contradicts"),
    ("spec-yaml-syntax", "YAML syntax error in a spec",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--spec",
                e.yaml("s6.yaml", "layers: [\n")], "YAML syntax error"),
    ("rules-unknown-key", "rule file with an unknown key",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--rules",
                e.yaml("r.yaml", "schema: 1\nname: r\nop_rule: []\n")], "unknown key"),
    ("unknown-case", "unknown built-in case",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--case", "ResNet50Case"],
     "unknown built-in case"),
    ("plan-other-model", "saved plan made for another model",
     lambda e: ["insert", str(e.model), "-o", "{out}", "--use-plan",
                _plan_for_other_model(e)], "does not match this model"),
    ("data-wrong-name", "calibration data with wrong input names",
     lambda e: ["calibrate", str(e.qdq), "--data", e.npz("d1.npz", a=np.ones((2, 3, 8, 8)),
                                                         b=np.ones(2)), "-o", "{out}"],
     "no array for model input"),
    ("data-wrong-shape", "calibration data with the wrong shape (NHWC vs NCHW)",
     lambda e: ["calibrate", str(e.qdq), "--data", e.npz("d2.npz", x=np.ones((2, 8, 8, 3))),
                "-o", "{out}"], "check NHWC vs NCHW"),
    ("data-wrong-dtype", "calibration data with a non-numeric dtype",
     lambda e: ["calibrate", str(e.qdq), "--data",
                e.npz("d3.npz", x=np.full((2, 3, 8, 8), "a")), "-o", "{out}"], "dtype"),
    ("data-nan", "NaN/Inf in the data",
     lambda e: ["calibrate", str(e.qdq), "--data",
                e.npz("d4.npz", x=np.full((2, 3, 8, 8), np.nan, np.float32)), "-o", "{out}"],
     "NaN/Inf"),
    ("data-empty", "empty data",
     lambda e: ["calibrate", str(e.qdq), "--data", e.npz("d5.npz", x=np.ones((0, 3, 8, 8))),
                "-o", "{out}"], "is empty"),
    ("data-pickle", "pickled (object) data file",
     lambda e: ["calibrate", str(e.qdq), "--data", _pickled(e), "-o", "{out}"],
     "pickled Python objects"),
    ("data-not-numpy", "data file that is not numpy",
     lambda e: ["calibrate", str(e.qdq), "--data", e.file("x.npz", b"hello"), "-o", "{out}"],
     "not a readable numpy file"),
    ("calibrate-float-model", "calibrating a model without Q/DQ",
     lambda e: ["calibrate", str(e.model), "--data", str(e.data), "-o", "{out}"],
     "no activation Q/DQ pairs"),
    ("bad-percentile", "percentile outside (0, 100]",
     lambda e: ["calibrate", str(e.qdq), "--data", str(e.data), "-o", "{out}", "--method",
                "percentile", "--percentile", "120"], "--percentile"),
    ("bad-batch-size", "batch size <= 0",
     lambda e: ["calibrate", str(e.qdq), "--data", str(e.data), "-o", "{out}",
                "--batch-size", "0"], "positive integer"),
    ("labels-missing", "training data without labels",
     lambda e: ["finetune", str(e.mlp_qdq), "--data",
                e.npz("t1.npz", x=np.ones((4, 4), np.float32)), "-o", "{out}"], "no labels"),
    ("labels-range", "labels that do not match the outputs",
     lambda e: ["finetune", str(e.mlp_qdq), "--data",
                e.npz("t2.npz", x=np.ones((4, 4), np.float32), labels=np.array([0, 1, 7, 2])),
                "-o", "{out}"], "class indices span"),
    ("labels-count", "fewer labels than samples",
     lambda e: ["finetune", str(e.mlp_qdq), "--data",
                e.npz("t3.npz", x=np.ones((4, 4), np.float32), labels=np.array([0, 1])),
                "-o", "{out}"], "4 samples but 2 labels"),
    ("lr-not-positive", "learning rate <= 0",
     lambda e: ["finetune", str(e.mlp_qdq), "--data", str(e.train), "-o", "{out}", "--lr",
                "0"], "--lr must be a positive"),
    ("resume-other-model", "resume from a checkpoint of another model",
     lambda e: (lambda m, ck: ["finetune", m, "--data", str(e.train), "-o", "{out}",
                               "--resume", ck])(*_other_checkpoint(e)), "another model"),
    ("resume-empty-dir", "resume from a folder with no checkpoint",
     lambda e: ["finetune", str(e.mlp_qdq), "--data", str(e.train), "-o", "{out}",
                "--resume", str(e.root)], "no checkpoint to resume from"),
    ("keras-wrong-extension", "convert a file that is not a Keras model",
     lambda e: ["convert", str(e.model), "-o", "{out}"], "expected a .keras or .h5 file"),
    ("output-is-folder", "-o names an existing folder",
     lambda e: ["insert", str(e.model), "-o", _folder(e, "outdir")], "is a folder"),
    ("cyclic-graph", "a graph whose nodes form a cycle",
     lambda e: ["insert", _broken(e, "cycle.onnx", _cycle), "-o", "{out}"], "form a cycle"),
    ("truncated-weight", "an initializer whose raw payload is shorter than its dims",
     lambda e: ["insert", _broken(e, "short_w.onnx", _truncate_weight), "-o", "{out}"],
     "has 40 bytes of data, its dims [4, 4, 3, 3] need 576"),
    ("runtime-failure", "a graph onnxruntime cannot run on the data (a Reshape that "
     "captured a batch of 3)",
     lambda e: ["insert", e.onnx("fixed_reshape.onnx", _fixed_reshape()), "-o", "{out}",
                "--calib", e.npz("c4.npz", x=np.ones((4, 4), np.float32))],
     "onnxruntime cannot run node 'flatten' (Reshape)"),
    ("nan-weight", "NaN in a weight",
     lambda e: ["insert", _broken(e, "nan_w.onnx", _poison(np.nan)), "-o", "{out}"],
     "weight 'c1_w' holds NaN/Inf"),
    ("inf-weight", "Inf in a weight",
     lambda e: ["insert", _broken(e, "inf_w.onnx", _poison(np.inf)), "-o", "{out}"],
     "weight 'c1_w' holds NaN/Inf"),
    ("nan-weight-calibrate", "NaN in a weight of a Q/DQ model to calibrate",
     lambda e: ["calibrate", _qdq_with_nan(e), "--data", str(e.data), "-o", "{out}"],
     "weight 'c1_w' holds NaN/Inf"),
    ("sensitivity-negative-target", "sensitivity --target-drop below 0",
     lambda e: ["sensitivity", str(e.model), "--data", _val(e), "--target-drop", "-1",
                "--spec-out", "{out}"], "--target-drop must be in [0, 100)"),
    ("sensitivity-huge-target", "sensitivity --target-drop of 100 points or more",
     lambda e: ["sensitivity", str(e.model), "--data", _val(e), "--target-drop", "150",
                "--spec-out", "{out}"], "--target-drop must be in [0, 100)"),
    ("sensitivity-nan-target", "sensitivity --target-drop nan",
     lambda e: ["sensitivity", str(e.model), "--data", _val(e), "--target-drop", "nan",
                "--spec-out", "{out}"], "--target-drop must be in [0, 100)"),
    ("sensitivity-no-samples", "sensitivity --max-samples 0",
     lambda e: ["sensitivity", str(e.model), "--data", _val(e), "--max-samples", "0"],
     "--max-samples must be a positive integer"),
    ("fp8-integer-calibration", "insert --dtype fp8 with an integer-grid calibration method",
     lambda e: ["insert", e.onnx("wide.onnx", _float_model(width=16)), "-o", "{out}",
                "--dtype", "fp8", "--calib", _val(e), "--calib-method", "entropy"],
     "fp8 takes max or percentile"),
    ("sensitivity-spec-out-folder", "sensitivity --spec-out names a folder",
     lambda e: ["sensitivity", str(e.model), "--data", _val(e), "--target-drop", "1",
                "--spec-out", _folder(e, "specdir")], "is a folder"),
    ("report-sensitivity-not-a-report", "report --sensitivity names a JSON that is not a "
     "sensitivity report", lambda e: _report_with(e, "not_sens.json", '{"metric": "x"}'),
     "not_sens.json: not a sensitivity report (no list of layers)"),
    ("report-sensitivity-wrong-fields", "report --sensitivity rows with unknown fields",
     lambda e: _report_with(e, "odd_sens.json", '{"layers": [{"layer": "c0", "score": 1}]}'),
     "odd_sens.json: not a sensitivity report (TypeError"),
    ("workers-zero", "calibrate or finetune --workers below 1",
     lambda e: ["calibrate", str(e.qdq), "--data", str(e.data), "-o", "{out}", "--workers",
                "0"], "--workers must be at least 1"),
]


# Cases that reach the fine-tuning engine (the others are refused before it is needed).
NEEDS_TRAINING = {"labels-missing", "labels-range", "labels-count", "resume-other-model",
                  "resume-empty-dir"}


def _cases():
    return [pytest.param(*c, id=c[0], marks=[pytest.mark.training] if c[0] in NEEDS_TRAINING
                         else []) for c in CASES]


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case_id,description,build,message", _cases())
def test_bad_input(env, capsys, case_id, description, build, message):
    out = env.root / f"{case_id}.out.onnx"
    argv = [a.replace("{out}", str(out)) for a in build(env)]
    inputs = [Path(a) for a in argv if Path(a).is_file() and a.endswith(".onnx")]
    before = {p: _hash(p) for p in inputs}
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert not list(env.root.glob(f".{out.name}*"))  # no temporary left behind
    assert {p: _hash(p) for p in inputs} == before


def test_debug_flag_shows_the_traceback(env):
    res = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", "--debug", "insert",
                          str(env.root / "nope.onnx"), "-o", str(env.out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_internal_errors_exit_3(env, monkeypatch, capsys):
    import qdq_onnx.pipeline.stages as stages

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(stages, "_plan_placement", boom)
    assert main(["insert", str(env.model), "-o", str(env.out)]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" in err
    assert not env.out.exists()


@pytest.mark.parametrize("name,build", [
    ("opset 7-12 is upgraded", lambda e: _opset(e, 11)),
    ("dynamic batch and spatial dims", lambda e: e.onnx("dyn.onnx", _float_model(
        input_shape=("N", 3, "H", "W")))),
])
def test_handled_inputs_succeed(env, name, build):
    path = build(env)
    out = env.root / "ok.onnx"
    assert main(["insert", path, "-o", str(out), "--calib", str(env.data)]) == 0
    m = onnx.load(out)
    assert m.opset_import[0].version >= 13
    onnx.checker.check_model(m, full_check=True)


def test_the_docs_list_every_case():
    text = TROUBLESHOOTING.read_text()
    table = text[text.index("## Bad inputs"):]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M))
    assert listed == {c[0] for c in CASES}


PAUSE = Path(__file__).resolve().parents[1] / "pause.py"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_command_leaves_no_output(tmp_path, sig):
    """The signal arrives while calibration is between two batches (the child says so on
    a pipe and waits): exit 130, nothing written, no temporary left."""
    import signal

    model = tmp_path / "q.onnx"
    onnx.save(quantize_model(_float_model()).onnx, model)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(64, 3, 8, 8)).astype("f"))
    out = tmp_path / "out.onnx"
    proc = subprocess.Popen([sys.executable, str(PAUSE), "calibration-batch", "--",
                             "calibrate", str(model), "--data", str(data), "-o", str(out),
                             "--method", "entropy", "--batch-size", "8"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "paused"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; no output was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "q.onnx"]


def _small_filesystem(folder: Path) -> bool:
    """A 64 KiB tmpfs mounted on `folder` where the machine allows it (root with mount
    rights); False otherwise."""
    folder.mkdir()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True)
    except OSError:  # no mount command
        return False
    return res.returncode == 0


def test_disk_full_is_one_line_and_leaves_nothing(env, tmp_path, capsys, monkeypatch):
    """On a real 64 KiB file system where this machine can mount one, else with the write
    failing as a full disk makes it fail (ENOSPC): exit 2, one line, no output, no
    temporary."""
    import errno

    small = tmp_path / "small"
    mounted = _small_filesystem(small)
    if not mounted:
        import qdq_onnx.files.onnx_files as files

        def full_disk(model, fh, *args, **kwargs):
            fh.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(files, "write_streaming", full_disk)
    g = G(input_shape=(1, 64, 8, 8))  # 295 KiB of weights: more than the disk holds
    big = env.onnx("big.onnx", g.model([g.conv("c1", g.conv("c0", "x", 64), 64)]))
    try:
        out = small / "out.onnx"
        capsys.readouterr()
        assert main(["insert", big, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "no space left on the device" in err and len(err.splitlines()) == 1, err
        assert list(small.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)
