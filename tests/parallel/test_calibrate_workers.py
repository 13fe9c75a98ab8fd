"""`calibrate --workers 2`: each rank calibrates its share of the batches, and the reduced
maxima and histograms give the very scales of one process on all the data."""

import numpy as np
import onnx
import pytest

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main


@pytest.fixture(scope="module")
def files(digits, float_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrate-workers")
    xtr = digits[0]
    src = folder / "q.onnx"
    onnx.save(quantize_model(float_model, calibration_data=xtr[:64]).onnx, src)
    data = folder / "calib.npz"
    np.savez(data, x=xtr[:1000])  # 1000 samples in batches of 96: 11 batches, the last short
    return src, data, folder


def _initializers(path):
    return {t.name: t.SerializeToString() for t in onnx.load(path).graph.initializer}


@pytest.mark.parametrize("method", ["max", "percentile", "entropy", "mse"])
def test_two_ranks_give_the_scales_of_one(files, method, capsys):
    src, data, folder = files
    outs = []
    for workers in (1, 2):
        out = folder / f"{method}-{workers}.onnx"
        assert main(["calibrate", str(src), "--data", str(data), "-o", str(out), "--method",
                     method, "--batch-size", "96", "--high-precision", "fp32", "--workers",
                     str(workers)]) == 0
        outs.append(_initializers(out))
    assert outs[0] == outs[1]
    assert "wrote" in capsys.readouterr().out


def test_workers_must_be_positive(files, capsys):
    src, data, folder = files
    assert main(["calibrate", str(src), "--data", str(data), "-o", str(folder / "z.onnx"),
                 "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
    assert not (folder / "z.onnx").exists()


def test_two_ranks_write_the_same_typed_file(files):
    """The default FP16 remainder: the range guard's data pass is sharded and reduced too
    (every rank runs it; rank 0 writes): the whole file is byte for byte one process's."""
    src, data, folder = files
    paths = [folder / f"typed-{w}.onnx" for w in (1, 2)]
    for workers, out in zip((1, 2), paths):
        assert main(["calibrate", str(src), "--data", str(data), "-o", str(out),
                     "--workers", str(workers)]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_collective_timeout_must_be_positive(files, capsys):
    src, data, folder = files
    assert main(["calibrate", str(src), "--data", str(data), "-o", str(folder / "z.onnx"),
                 "--workers", "2", "--collective-timeout", "0"]) == 2
    assert "--collective-timeout must be a positive number" in capsys.readouterr().err
