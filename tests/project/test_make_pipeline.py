"""The Makefile fragment end to end on a small Keras model (scikit-learn digits):
every target is built, a second run does nothing, a failing step leaves no target."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pipeline" / "Makefile"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import keras
    from sklearn.datasets import load_digits

    if shutil.which("make") is None:
        pytest.fail("GNU make is required for the pipeline fragment")
    d = load_digits()
    x = (d.images / 16).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, verbose=0)
    root = tmp_path_factory.mktemp("pipeline")
    model.save(root / "model.keras")
    np.savez(root / "data.npz", image=x[:800], labels=y[:800])
    return root


def make(project, out, *extra, question=False):
    cmd = ["make", "-f", str(EXAMPLE), f"MODEL={project / 'model.keras'}",
           f"DATA={project / 'data.npz'}", f"OUT={out}", "EPOCHS=1",
           f"QDQ_ONNX={sys.executable} -m qdq_onnx.cli.main", *extra]
    if question:
        cmd.insert(1, "-q")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=project)


@pytest.mark.training
def test_pipeline_builds_is_incremental_and_leaves_nothing_on_failure(project):
    out = project / "build"
    res = make(project, out)
    assert res.returncode == 0, res.stdout + res.stderr
    targets = ["fp32.onnx", "qdq.onnx", "calibrated.onnx", "int8.onnx"]
    for name in targets:
        onnx.checker.check_model(str(out / name), full_check=True)
    ops = {n.op_type for n in onnx.load(out / "int8.onnx").graph.node}
    assert "QuantizeLinear" in ops
    stamps = {n: (out / n).stat().st_mtime_ns for n in targets}
    assert make(project, out, question=True).returncode == 0  # up to date
    again = make(project, out)
    assert again.returncode == 0 and "qdq_onnx" not in again.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in targets} == stamps

    bad_spec = project / "bad.yaml"
    bad_spec.write_text("layers:\n  - name: no_such_layer\n")
    broken = project / "broken"
    res = make(project, broken, f"SPEC={bad_spec}")
    assert res.returncode != 0
    assert "no layer named 'no_such_layer'" in res.stderr
    assert (broken / "fp32.onnx").exists()
    assert sorted(p.name for p in broken.iterdir()) == ["fp32.onnx"]
