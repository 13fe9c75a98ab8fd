"""Data read from disk as it is needed: a folder with one memory-mapped .npy per model
input plus labels.npy, through calibration and fine-tuning, with steps per epoch."""

import functools
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import small_classifier as _model

from qdq_onnx import quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.data.feeds import Streamed, load_arrays, load_labelled
from qdq_onnx.errors import QdqError


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


@pytest.mark.training
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


# -- iterables of batches (Keras-style datasets) ----------------------------------------------

def _arrays(n=96):
    rng = np.random.default_rng(1)
    return rng.random((n, 3, 8, 8), dtype=np.float32), rng.integers(0, 4, n)


def _initializers(model):
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


def _same(a, b):
    ia, ib = _initializers(a), _initializers(b)
    return ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)


@functools.cache
def _float_model():
    return _model()  # one set of weights for every run compared


def _fitted(x, y=None, **kw):
    xa, _ = _arrays()
    q = quantize_model(_float_model(), calibration_data=xa)
    q.compile(learning_rate=1e-3)
    history = q.fit(x, y, batch_size=16, epochs=2, verbose=0, **kw)
    return q, history


@pytest.mark.training
def test_a_generator_of_batches_trains_exactly_like_the_arrays():
    x, y = _arrays()
    reference, _ = _fitted(x, y)

    def gen():  # one-shot: read once, then trained on from disk
        for s in range(0, len(x), 10):
            yield x[s:s + 10], y[s:s + 10]

    q, history = _fitted(gen())
    assert history.steps == 12  # 96 samples, batch 16, 2 epochs
    assert _same(q.export(), reference.export())
    listed, _ = _fitted([(x[s:s + 32], y[s:s + 32]) for s in range(0, 96, 32)])
    assert _same(listed.export(), reference.export())


@pytest.mark.training
def test_spilled_batches_are_removed_when_the_trainer_closes():
    x, y = _arrays()
    q, _ = _fitted(iter([(x, y)]))
    folders = list(q._training._trainer._spills)
    assert folders and all(Path(f).is_dir() for f in folders)
    q._training.close()
    assert not any(Path(f).exists() for f in folders)


@pytest.mark.training
def test_bad_batches_are_one_line_errors():
    x, y = _arrays()
    q = quantize_model(_float_model(), calibration_data=x)
    q.compile()
    cases = [
        ([(x[:8], y[:8]), (x[8:16, :, :4], y[8:16])], "earlier batches had [N, 3, 8, 8]"),
        (iter([x[:8], x[8:16]]), "carry no labels"),
        ([(x[:8], y[:8]), x[8:16]], "has no labels, earlier batches had them"),
        ([(x[:8], y[:7])], "different batch sizes"),
        ([(x[:8], y[:8], np.ones(8))], "sample weights are not supported"),
        (iter([]), "gave no batches"),
    ]
    for data, message in cases:
        with pytest.raises(QdqError, match=re.escape(message)):
            q.fit(data, verbose=0)
    with pytest.raises(QdqError, match="labels are missing"):
        q.fit(x, verbose=0)


def test_calibration_takes_x_y_batches_and_tensors():
    x, _ = _arrays()
    reference = quantize_model(_float_model(), calibration_data=x)
    batches = [(x[s:s + 32], np.zeros(32)) for s in range(0, 96, 32)]
    assert _same(quantize_model(_float_model(), calibration_data=batches).onnx, reference.onnx)


@pytest.mark.training
def test_tf_data_and_pydataset_calibrate_and_fit_like_arrays():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    x, y = _arrays()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i >= 3:
                raise IndexError(i)
            return x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    reference = quantize_model(_float_model(), calibration_data=x)
    for data in (dataset, Batches()):
        assert _same(quantize_model(_float_model(), calibration_data=data).onnx, reference.onnx)
    trained, _ = _fitted(x, y, validation_data=(x, y))
    for data in (dataset, Batches()):
        q, history = _fitted(data, validation_data=data)
        assert _same(q.export(), trained.export())
        assert "val_loss" in history.history and len(history.history["val_loss"]) == 2


@pytest.mark.training
def test_pipeline_finetune_takes_a_generator_and_emits_a_checked_model():
    from qdq_onnx import pipeline

    x, y = _arrays()
    q = quantize_model(_float_model(), calibration_data=x)
    tuned = pipeline.finetune(q.onnx, ((x[s:s + 16], y[s:s + 16]) for s in range(0, 96, 16)),
                              fit=pipeline.FitConfig(epochs=1, batch_size=16, steps_per_epoch=4,
                                                     verbose=0))
    assert tuned.history.steps == 4
    onnx.checker.check_model(tuned.model, full_check=True)


@pytest.mark.training
def test_a_folder_of_npz_shards_is_read_shard_by_shard(tmp_path):
    x, y = _arrays()
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, s in enumerate(range(0, 96, 40)):
        np.savez(shards / f"part-{i:03d}.npz", x=x[s:s + 40], labels=y[s:s + 40])
    arrays = load_arrays(shards)
    assert all(isinstance(v, np.memmap) for v in arrays.values())
    assert np.array_equal(arrays["x"], x) and np.array_equal(arrays["labels"], y)
    src = tmp_path / "m.onnx"
    onnx.save(quantize_model(_float_model()).onnx, src)
    assert main(["finetune", str(src), "--data", str(shards), "-o", str(tmp_path / "ft.onnx"),
                 "--steps-per-epoch", "2", "--quiet"]) == 0
    np.savez(shards / "part-009.npz", x=x[:8])  # no labels in this shard
    with pytest.raises(QdqError, match=re.escape("inputs ['x'], earlier batches had")):
        load_arrays(shards)
    np.save(shards / "x.npy", x)
    with pytest.raises(QdqError, match="mixes .npy and .npz"):
        load_arrays(shards)
