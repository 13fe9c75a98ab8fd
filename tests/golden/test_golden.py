"""The refactor keeps every output: the golden cases (`cases.py`) rerun now give the bytes
the code of commit 2a4c3d8 wrote, up to the work folder's path, the rule file's path and
hash, and the `scheme` each placement of the embedded plan now names."""

import json
from pathlib import Path

import onnx
import pytest

from golden.cases import CASES, write_inputs

FILES = Path(__file__).parent / "files"
PLAN_KEY = "qdq_onnx.plan"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    write_inputs(folder)
    return folder


# The weights of the 4-bit case are in the narrowed scheme; everything else is int8.
WEIGHT_SCHEME = {"py_w4_ptq.onnx": "int8-4bit", "py_w4_qat.onnx": "int8-4bit"}


def _plan_without_additions(text: str, file: str) -> dict:
    plan = json.loads(text)
    plan["rules"].pop("path", None)
    plan["rules"].pop("sha256", None)
    for p in plan["placements"]:
        want = WEIGHT_SCHEME.get(file, "int8") if p["kind"] == "weight" else "int8"
        assert p.pop("scheme") == want, p
    return plan


def _metadata(model: onnx.ModelProto, work: Path) -> dict[str, object]:
    meta = {p.key: p.value.replace(str(work), "<work>") for p in model.metadata_props}
    return meta


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_is_unchanged(work, name):
    run, files = CASES[name]
    run(work)
    for f in files:
        old, new = onnx.load(FILES / f), onnx.load(work / f)
        assert new.graph.SerializeToString() == old.graph.SerializeToString(), f
        assert (new.ir_version, new.opset_import, new.producer_name) == \
            (old.ir_version, old.opset_import, old.producer_name)
        old_meta, new_meta = _metadata(old, Path("/tmp")), _metadata(new, work)
        old_plan = json.loads(old_meta.pop(PLAN_KEY)) if PLAN_KEY in old_meta else None
        new_plan = new_meta.pop(PLAN_KEY, None)
        if old_plan is not None:
            old_plan["rules"].pop("path", None)
            old_plan["rules"].pop("sha256", None)
            assert _plan_without_additions(new_plan, f) == old_plan, f
        # The old files name their (long gone) work folder: compare without the folder.
        assert {k: _strip_folder(v) for k, v in new_meta.items()} == \
            {k: _strip_folder(v) for k, v in old_meta.items()}, f


def _strip_folder(value: str) -> str:
    """Paths of work folders and the rule file's hash (the rule file gained `scheme:`
    keys) are not outputs of the code under test."""
    import re

    value = re.sub(r'"source": "[^"]*/([^/"]+)"', r'"source": "\1"', value)
    value = re.sub(r'"path": "[^"]*/([^/"]+)"', r'"path": "\1"', value)
    return re.sub(r'"sha256": "[0-9a-f]+"', '"sha256": "-"', value)
