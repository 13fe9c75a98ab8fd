import pytest

from qdq_onnx.errors import QdqError
from qdq_onnx.placement.rules import bundled_rule_files, load_rules


def test_bundled_rule_files_load_with_ids_and_reasons():
    files = bundled_rule_files()
    assert {"tensorrt", "nvidia-tf-toolkit"} <= set(files)
    for name in files:
        rules = load_rules(name)
        ids = [r.id for r in rules.all_rules()]
        assert len(ids) == len(set(ids))
        assert all(r.reason for r in rules.all_rules())
    trt = load_rules("tensorrt")
    assert trt.op_rule_for("ConvTranspose").weight_axis.fixed == 0
    assert trt.op_rule_for("Conv").weight_axis.fixed == 0
    assert trt.op_rule_for("Gemm").weight_axis.resolve({"transB": 1}) == 0
    assert trt.op_rule_for("Gemm").weight_axis.resolve({}) == 1
    assert trt.pattern("residual_add") is not None
    ntt = load_rules("nvidia-tf-toolkit")
    assert ntt.pattern("residual_add") is None
    assert ntt.op_rule_for("ConvTranspose") is None


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


GOOD_HEAD = "schema: 1\nname: t\n"


@pytest.mark.parametrize("body,message", [
    ("op_rules:\n  - id: A\n    name: a\n    ops: [Conv]\n    inputs: [data, weight]\n"
     "    reason: r\n", "gives no weight_axis"),
    ("op_rules:\n  - id: A\n    name: a\n    ops: [Conv]\n    reason: r\n    colour: red\n",
     "unknown key 'colour'"),
    ("op_rules:\n  - id: A\n    name: a\n    ops: [Conv]\n    reason: r\n"
     "  - id: A\n    name: b\n    ops: [Gemm]\n    reason: r\n", "used twice"),
    ("patterns:\n  residual_ad:\n    id: P\n    name: p\n    reason: r\n",
     "did you mean 'residual_add'"),
    ("patterns:\n  concat:\n    id: P\n    name: p\n    reason: r\n    mode: some\n",
     "must be one of all, none, shared"),
    ("op_rules:\n  - id: A\n    name: a\n    ops: [Relu]\n    reason: r\n"
     "never:\n  - id: N\n    name: n\n    ops: [Relu]\n    reason: r\n", "both quantized"),
])
def test_rule_file_errors_name_file_and_line(tmp_path, body, message):
    p = _write(tmp_path, GOOD_HEAD + body)
    with pytest.raises(QdqError) as err:
        load_rules(p)
    assert message in str(err.value)
    assert f"{p}:" in str(err.value)


def test_yaml_syntax_error_has_line(tmp_path):
    p = _write(tmp_path, GOOD_HEAD + "op_rules: [\n  - id: x\n")
    with pytest.raises(QdqError, match=r"r\.yaml:\d+: YAML syntax error"):
        load_rules(p)


def test_unknown_rule_set_suggests():
    with pytest.raises(QdqError, match="did you mean tensorrt"):
        load_rules("tensorrtt")


def test_wrong_schema(tmp_path):
    with pytest.raises(QdqError, match="schema"):
        load_rules(_write(tmp_path, "schema: 2\nname: x\n"))
