"""Every public name (what the package exports: `__all__` of qdq_onnx and its stage
packages, and the public methods of exported classes) has a docstring."""

import importlib
import inspect

import pytest

PUBLIC_MODULES = ["qdq_onnx", "qdq_onnx.pipeline", "qdq_onnx.finetune",
                  "qdq_onnx.placement.rules", "qdq_onnx.diagnostics.lint"]


def public_names():
    for mod_name in PUBLIC_MODULES:
        mod = importlib.import_module(mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if name.startswith("__") or inspect.ismodule(obj) or not callable(obj):
                continue
            yield f"{mod_name}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member):
                        yield f"{mod_name}.{name}.{attr}", member


@pytest.mark.parametrize("qualname,obj", list(public_names()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_public_name_has_a_docstring(qualname, obj):
    doc = inspect.getdoc(obj)
    generated = inspect.isclass(obj) and (doc or "").startswith(f"{obj.__name__}(")
    assert doc and len(doc) > 15 and not generated, f"{qualname} needs a docstring"
