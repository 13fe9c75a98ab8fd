"""The pool of real pretrained ONNX files from other exporters (tests/real_pool.py): each
inserts with calibration and the range guard on, lints clean, fine-tunes a few steps by
distillation from the command line and emits (finetune writes only a file that computes what
the training graph computed). A representative few run in `make test`, the rest under the
slow marker; the two files onnxruntime-training cannot train are refused in one line by that
backend, and trained by torch under the default `auto`."""

import numpy as np
import pytest
from real_pool import BY_NAME, POOL

from qdq_onnx.cli.main import main

pytestmark = pytest.mark.training
FAST = {"ppocr_cls", "ppocr_det", "mtcnn_pnet", "mtcnn_onet", "magika"}
# onnxruntime-training 1.19 fails its own gradient of a Reshape feeding an Expand there
# (docs/troubleshooting.md: Limits); the torch backend trains them.
REFUSED = {"magika": "the gradient of node 'jax2tf_get_logits_/pjit_get_logits_/Reshape' "
                     "fails (Reshape:",
           "basic_pitch": "the gradient of node 'model_1/normalized_log_1/Reshape"}
BATCH_ONE = {"yolox_ddddocr", "picodet_layout"}  # graphs that hard-code batch 1


def _clean(report: str) -> bool:
    return " 0 errors, 0 warnings" in report


def _params():
    for m in POOL:
        marks = () if m.name in FAST else (pytest.mark.slow,)
        yield pytest.param(m.name, marks=marks, id=m.name)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", list(_params()))
def test_inserts_lints_clean_and_fine_tunes(name, tmp_path, capsys):
    entry = BY_NAME[name]
    data = tmp_path / "data.npz"
    np.savez(data, **entry.inputs(2 if name in BATCH_ONE else 8))
    q, out = tmp_path / "q.onnx", tmp_path / "out.onnx"
    code, _, err = _run(capsys, "insert", str(entry.path()), "--calib", str(data), "-o", str(q))
    assert code == 0, err
    code, report, _ = _run(capsys, "lint", str(q))
    assert code == 0 and _clean(report), report[-2000:]
    argv = ["finetune", str(q), "--data", str(data), "--distill", "--steps-per-epoch", "2",
            "--batch-size", "1" if name in BATCH_ONE else "4", "-o", str(out)]
    if name in REFUSED:  # named, onnxruntime-training refuses it in one line
        code, _, err = _run(capsys, *argv, "--backend", "onnxruntime")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert REFUSED[name] in err and "onnxruntime_src" not in err
        assert not out.exists()
    # the default (auto) trains it: with torch where onnxruntime-training cannot, saying why
    code, stdout, err = _run(capsys, *argv)
    if name in REFUSED:
        assert "trained by torch" in stdout and REFUSED[name] in stdout, stdout
    assert code == 0, err
    assert "2 steps (completed)" in stdout
    code, report, _ = _run(capsys, "lint", str(out))
    assert code == 0 and _clean(report), report[-2000:]


def test_the_pool_covers_five_packages_and_the_exporters():
    trained = [m for m in POOL if m.name not in REFUSED]  # by both backends
    assert len(trained) >= 8 and len({m.package for m in trained}) >= 5
    assert {e.split(",")[0].split(" ")[0] for e in (m.exporter for m in POOL)} >= \
        {"paddle2onnx", "torch.onnx", "keras2onnx", "tf2onnx"}
