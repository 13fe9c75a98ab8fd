"""QuantizationSpec semantics (the original toolkit's), YAML spec files and their errors."""

import pytest
from helpers import G, dq_fed

from qdq_onnx import QuantizationSpec, quantize_model
from qdq_onnx.errors import QdqError, SpecError
from qdq_onnx.placement.spec import load_spec_file


def _model():
    g = G()
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    b = g.conv("c1", a, 4)
    y = g.binary("Add", "add", a, b)
    p = g.node("AveragePool", "avg", [y], kernel_shape=[2, 2])
    g.channels[p] = 4
    return g.model([g.conv("c2", p, 4)])


def test_add_broadcasts_scalars_and_checks_lengths():
    s = QuantizationSpec()
    s.add(["c0", "c1"], quantize_input=False, quantize_weight=[True, False])
    assert [(e.name, e.quantize_input, e.quantize_weight) for e in s.layers] == [
        ("c0", False, True), ("c1", False, False)]
    with pytest.raises(SpecError, match="has 3 items but name has 2"):
        s.add(["a", "b"], quantize_weight=[True, True, False])
    s2 = QuantizationSpec().add("add", quantization_index=[1])
    assert s2.layers[0].quantization_index == (1,)


def test_full_default_and_full_with_spec():
    m = _model()
    base = dq_fed(quantize_model(m).onnx)
    assert {("c0", 0), ("c0", 1), ("c1", 0), ("c1", 1), ("avg", 0), ("c2", 0)} <= base
    spec = QuantizationSpec().add("c1", quantize_input=False)  # keep weight only
    fed = dq_fed(quantize_model(m, quantization_spec=spec).onnx)
    assert ("c1", 0) not in fed and ("c1", 1) in fed
    assert ("c0", 0) in fed  # the rest stays default


def test_named_layer_with_no_flags_is_left_float():
    spec = QuantizationSpec().add("c2", quantize_input=False, quantize_weight=False)
    q = quantize_model(_model(), quantization_spec=spec)
    fed = dq_fed(q.onnx)
    assert not any(n == "c2" for n, _ in fed)
    assert any(f.consumer == "c2" and f.rule == "SPEC" for f in q.plan.left_float)


def test_partial_mode_only_named_layers_and_index_selection():
    spec = QuantizationSpec().add(["c1", "add"], quantization_index=[None, [1]])
    fed = dq_fed(quantize_model(_model(), "partial", spec).onnx)
    assert fed == {("c1", 0), ("c1", 1), ("add", 1)}


def test_user_names_override_automatic_rules():
    # The residual rule leaves add[1] float; the user asks for both inputs.
    spec = QuantizationSpec().add("add", quantization_index=[0, 1])
    fed = dq_fed(quantize_model(_model(), quantization_spec=spec).onnx)
    assert {("add", 0), ("add", 1)} <= fed


def test_partial_without_spec_is_an_error():
    with pytest.raises(SpecError, match="partial mode"):
        quantize_model(_model(), "partial")


def test_spec_errors_name_the_entry_and_suggest():
    with pytest.raises(SpecError, match="no layer named 'c11'.*'c1'"):
        quantize_model(_model(), quantization_spec=QuantizationSpec().add("c11"))
    with pytest.raises(SpecError, match="out of range.*2 input"):
        quantize_model(_model(), quantization_spec=QuantizationSpec().add(
            "add", quantization_index=[2]))
    with pytest.raises(SpecError, match="no layer of class 'Cnv'.*'Conv'"):
        quantize_model(_model(), quantization_spec=QuantizationSpec().add(
            "Cnv", is_keras_class=True))
    spec = QuantizationSpec().add("c1").add("c1", quantize_input=False)
    with pytest.raises(SpecError, match="contradicts"):
        quantize_model(_model(), quantization_spec=spec)


def test_spec_object_and_model_are_not_mutated():
    m = _model()
    before = m.SerializeToString()
    spec = QuantizationSpec().add("c1", quantize_input=False)
    layers_before = list(spec.layers)
    quantize_model(m, quantization_spec=spec)
    assert spec.layers == layers_before
    assert m.SerializeToString() == before


def test_yaml_spec_selectors(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text("mode: partial\nlayers:\n  - op_type: AveragePool\n"
                 "  - node_regex: '^c[02]$'\n    quantize_weight: false\n")
    spec, mode, cases = load_spec_file(p)
    assert mode == "partial" and cases == []
    fed = dq_fed(quantize_model(_model(), mode, spec).onnx)
    assert fed == {("avg", 0), ("c0", 0), ("c2", 0)}


@pytest.mark.parametrize("text,message", [
    ("layers:\n  - nme: c1\n", "unknown key 'nme' \\(did you mean 'name'\\?\\)"),
    ("layers:\n  - name: c1\n    class: Conv\n", "exactly one of"),
    ("layerz: []\n", "did you mean 'layers'"),
    ("mode: half\n", "mode must be full or partial"),
    ("layers:\n  - name: c1\n    quantization_index: [a]\n", "list of integers"),
    ("layers:\n  - node_regex: '('\n", "not a valid regex"),
    ("layers: [\n", "YAML syntax error"),
])
def test_yaml_spec_errors_with_line(tmp_path, text, message):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    with pytest.raises(QdqError, match=message) as err:
        load_spec_file(p)
    assert str(p) in str(err.value)


def test_unknown_builtin_case_suggests():
    with pytest.raises(SpecError, match="did you mean ResNetV1QDQCase"):
        quantize_model(_model(), custom_qdq_cases=["ResNetV1QDQcase"])


def test_custom_case_entries_merge_after_user_spec():
    from qdq_onnx import CustomQDQInsertionCase

    class AllAddInputs(CustomQDQInsertionCase):
        def info(self):
            return "quantize both Add inputs"

        def case(self, model, quantization_spec):
            out = QuantizationSpec()
            for layer in model.layers:
                if layer.class_name == "Add":
                    assert [p.name for p in layer.inputs] == ["r0", "c1"]
                    out.add(layer.name, quantization_index=[0, 1])
            return out

    fed = dq_fed(quantize_model(_model(), custom_qdq_cases=[AllAddInputs()]).onnx)
    assert {("add", 0), ("add", 1)} <= fed
    user = QuantizationSpec().add("add", quantization_index=[0])
    fed = dq_fed(quantize_model(_model(), quantization_spec=user,
                                custom_qdq_cases=[AllAddInputs()]).onnx)
    assert ("add", 0) in fed and ("add", 1) not in fed
