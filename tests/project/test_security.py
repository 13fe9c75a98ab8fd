"""Security properties: no code execution from user files or strings."""

import ast
from pathlib import Path

import pytest

from qdq_onnx.errors import QdqError
from qdq_onnx.placement.rules import load_rules
from qdq_onnx.placement.spec import load_spec_file

PACKAGE = Path(__file__).resolve().parents[2] / "qdq_onnx"


@pytest.mark.parametrize("loader", [load_spec_file, load_rules])
def test_yaml_python_tags_are_refused(tmp_path, loader):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.yaml"
    p.write_text(f"layers: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(QdqError, match="YAML"):
        loader(p)
    assert not marker.exists()


def test_package_never_evaluates_strings():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("eval", "exec", "compile", "__import__"):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}")
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") \
                    and isinstance(node.value, ast.Name) and node.value.id == "pickle":
                offenders.append(f"{path.name}:{node.lineno} pickle.{node.attr}")
    assert offenders == []


def test_numpy_loads_never_allow_pickle():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "allow_pickle=True" not in text, path
        for line in text.splitlines():
            if "np.load(" in line:
                assert "allow_pickle=False" in line, f"{path.name}: {line.strip()}"
