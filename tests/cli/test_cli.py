"""The command line: subcommands, outputs, plans, and exit codes (0 ok, 2 bad input)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import RNG, G, dq_fed

from qdq_onnx.cli.main import main


@pytest.fixture()
def model_path(tmp_path):
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    y = g.binary("Add", "add", a, g.conv("c1", a, 4))
    p = tmp_path / "m.onnx"
    onnx.save(g.model([y]), p)
    return p


def test_insert_writes_checked_model_plan_and_explains(model_path, tmp_path, capsys):
    out, plan = tmp_path / "q.onnx", tmp_path / "plan.json"
    before = model_path.read_bytes()
    assert main(["insert", str(model_path), "-o", str(out), "--plan", str(plan),
                 "--explain"]) == 0
    text = capsys.readouterr().out
    assert "TRT-R001" in text and "float  add[1]" in text
    q = onnx.load(out)
    onnx.checker.check_model(q, full_check=True)
    assert ("add", 0) in dq_fed(q) and ("add", 1) not in dq_fed(q)
    data = json.loads(plan.read_text())
    assert data["format"] == "qdq-onnx-plan" and data["counts"]["weights"] == 2
    assert model_path.read_bytes() == before


def test_use_plan_applies_an_edited_plan(model_path, tmp_path):
    plan = tmp_path / "plan.json"
    assert main(["insert", str(model_path), "-o", str(tmp_path / "a.onnx"), "--plan",
                 str(plan)]) == 0
    data = json.loads(plan.read_text())
    data["placements"] = [p for p in data["placements"] if p["consumer"] != "c1"]
    plan.write_text(json.dumps(data))
    assert main(["insert", str(model_path), "-o", str(tmp_path / "b.onnx"), "--use-plan",
                 str(plan)]) == 0
    assert not any(n == "c1" for n, _ in dq_fed(onnx.load(tmp_path / "b.onnx")))


def test_insert_with_calibration_file(model_path, tmp_path):
    data = tmp_path / "calib.npz"
    np.savez(data, x=RNG.uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32))
    assert main(["insert", str(model_path), "-o", str(tmp_path / "q.onnx"), "--calib",
                 str(data)]) == 0
    q = onnx.load(tmp_path / "q.onnx")
    meta = {p.key: p.value for p in q.metadata_props}
    # the default method, its ranges refined on the outputs when that helped (TRT-G002)
    refined = json.loads(meta["qdq_onnx.plan"]).get("scale_refinement", {})
    assert refined["rule"] == "TRT-G002" and refined["method"] == "mse"
    assert meta["qdq_onnx.activation_scales"] == "calibrated:mse" + (
        "+refined" if refined["factors"] else "")
    assert main(["insert", str(model_path), "-o", str(tmp_path / "q_max.onnx"), "--calib",
                 str(data), "--calib-method", "max"]) == 0  # max: one flag away
    meta = {p.key: p.value for p in onnx.load(tmp_path / "q_max.onnx").metadata_props}
    assert meta["qdq_onnx.activation_scales"] == "calibrated:max"


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"\x08\x07garbage\xff\xff", "not an ONNX model"),
])
def test_bad_model_files_exit_2_with_one_line(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    out = tmp_path / "q.onnx"
    assert main(["insert", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_output_equal_to_input_is_refused(model_path, capsys):
    before = model_path.read_bytes()
    assert main(["insert", str(model_path), "-o", str(model_path)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert model_path.read_bytes() == before


def test_spec_error_exits_2(model_path, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("layers:\n  - name: c9\n")
    assert main(["insert", str(model_path), "-o", str(tmp_path / "q.onnx"), "--spec",
                 str(spec)]) == 2
    assert "no layer named 'c9'" in capsys.readouterr().err


def test_inspect_json_and_rules(model_path, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    main(["insert", str(model_path), "-o", str(out)])
    capsys.readouterr()
    assert main(["inspect", str(out), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = {(r["node"], r["input"]): (r["kind"], r["axis"]) for r in info["quantized_inputs"]}
    assert kinds[("c0", 1)] == ("weight", 0) and kinds[("c0", 0)] == ("activation", None)
    assert main(["rules", "TRT-W002"]) == 0
    assert "ConvTranspose" in capsys.readouterr().out
    assert main(["rules", "NOPE"]) == 2


def test_help_works_without_tensorflow():
    code = ("import sys; from qdq_onnx.cli.main import main\n"
            "try:\n    main(['insert', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules, 'TF imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "--calib" in res.stdout


def test_onnx_path_does_not_import_tensorflow(model_path, tmp_path):
    code = ("import sys; from qdq_onnx.cli.main import main\n"
            f"assert main(['insert', {str(model_path)!r}, '-o', "
            f"{str(tmp_path / 'q.onnx')!r}]) == 0\n"
            "assert 'tensorflow' not in sys.modules and 'tf2onnx' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_the_docs_exit_code_table_is_the_cli_table():
    import re
    from pathlib import Path

    from qdq_onnx.errors import EXIT_CODE_MEANINGS

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    section = text[text.index("Exit codes (one table"):]
    section = section[:section.index("\n\n", section.index("| code |"))]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M))
    assert {int(k): v for k, v in rows.items()} == {
        int(code): meaning for code, meaning in EXIT_CODE_MEANINGS.items()}


def test_help_lists_the_exit_codes(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped to the terminal
    assert "3 internal error" in out and "1 the command ran and found problems" in out
    assert "2 bad input or usage, or the environment refused" in out


def test_clipping_guard_warns_once_per_tensor_on_stderr(model_path, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(0, 1, (64, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    res = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", "insert", str(model_path),
                          "-o", str(out), "--calib", str(data), "--calib-method", "percentile",
                          "--percentile", "90"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert lines and "ClippingWarning" not in res.stderr
    assert any("'r0_out'" in ln and "% of the values" in ln and "dB" in ln for ln in lines)
    assert len(lines) == len(set(lines))
    quiet = subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", "insert",
                            str(model_path), "-o", str(tmp_path / "q2.onnx"), "--calib",
                            str(data), "--calib-method", "percentile", "--percentile", "90",
                            "--clip-warning", "0.5"], capture_output=True, text=True)
    assert quiet.returncode == 0 and "warning:" not in quiet.stderr
    assert out.read_bytes() != b"" and (tmp_path / "q2.onnx").stat().st_size > 0
