"""Data read from disk as it is needed: a folder with one memory-mapped .npy per model
input plus labels.npy, through calibration and fine-tuning, with steps per epoch."""

import json

import numpy as np
import onnx
from helpers import G

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.data.feeds import Streamed, load_arrays, load_labelled


def _model():
    g = G(input_shape=("N", 3, 8, 8))
    a = g.unary("Relu", "r", g.conv("c0", "x", 4))
    y = g.node("GlobalAveragePool", "gap", [g.conv("c1", a, 4)])
    flat = g.node("Flatten", "flat", [y])
    g.channels[flat] = 4
    return g.model([flat])


def _folder(tmp_path, n=200, dtype=np.float32, nan_at=None):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x = (rng.random((n, 3, 8, 8)) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    if nan_at is not None:
        x[nan_at, 0, 0, 0] = np.nan
    np.save(folder / "x.npy", x)
    np.save(folder / "labels.npy", rng.integers(0, 4, n))
    return folder


def test_a_folder_is_memory_mapped_and_read_batch_by_batch(tmp_path):
    folder = _folder(tmp_path, dtype=np.uint8)
    arrays = load_arrays(folder)
    assert isinstance(arrays["x"], np.memmap)
    x, labels = load_labelled(folder, _model())
    assert isinstance(x["x"], Streamed) and labels.shape == (200,)
    batch = x["x"][np.array([5, 1, 3])]
    assert batch.dtype == np.float32 and batch.shape == (3, 3, 8, 8)
    assert np.array_equal(batch, np.asarray(arrays["x"])[[5, 1, 3]].astype(np.float32))


def test_calibrate_and_finetune_from_a_memory_mapped_folder(tmp_path, capsys):
    folder = _folder(tmp_path)
    src = tmp_path / "m.onnx"
    onnx.save(quantize_model(_model()).onnx, src)
    assert main(["calibrate", str(src), "--data", str(folder), "-o",
                 str(tmp_path / "cal.onnx")]) == 0
    out, ckpt = tmp_path / "ft.onnx", tmp_path / "ck"
    assert main(["finetune", str(tmp_path / "cal.onnx"), "--data", str(folder), "-o",
                 str(out), "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "16",
                 "--checkpoint-dir", str(ckpt), "--quiet"]) == 0
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 6  # 2 epochs x 3
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_nan_in_a_memory_mapped_folder_is_reported_when_read(tmp_path, capsys):
    folder = _folder(tmp_path, nan_at=7)
    src = tmp_path / "m.onnx"
    onnx.save(quantize_model(_model()).onnx, src)
    assert main(["calibrate", str(src), "--data", str(folder), "-o",
                 str(tmp_path / "cal.onnx")]) == 2
    err = capsys.readouterr().err
    assert "NaN/Inf" in err and "'x'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cal.onnx").exists()
