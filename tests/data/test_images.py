"""Image folders (one sub-folder per class) as model input: decoded with Pillow a batch at a
time, resized to the model input in its layout, normalised as keras.applications'
preprocess_input does; through calibration, fine-tuning and the CLI."""

import numpy as np
import onnx
import pytest
from helpers import G
from helpers import small_classifier as _model
from PIL import Image

from qdq_onnx import ImageFolder, quantize_model
from qdq_onnx.cli.main import main
from qdq_onnx.data.feeds import load_arrays, load_labelled, match_inputs
from qdq_onnx.errors import QdqError


def _images(tmp_path, per_class=6, size=(12, 10)):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for k, name in enumerate(["dog", "cat", "bird"]):  # labels follow sorted names
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., 0] = 40 * k  # the class shows in the red channel
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(root / name / f"{i:03d}{suffix}")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def _reference(path, size, mode):
    """What Keras users feed: PIL resize, then keras.applications preprocess_input."""
    keras = pytest.importorskip("keras")
    with Image.open(path) as img:
        x = np.asarray(img.convert("RGB").resize(size, Image.BILINEAR), np.float32)
    if mode == "none":
        return x
    return keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)


@pytest.mark.parametrize("mode", ["none", "tf", "torch", "caffe"])
def test_images_match_keras_preprocess_input_in_nhwc_and_nchw(tmp_path, mode):
    root = _images(tmp_path)
    arrays = load_arrays(ImageFolder(root, preprocess=mode))
    assert arrays["labels"].tolist() == [0] * 6 + [1] * 6 + [2] * 6  # bird, cat, dog
    first = sorted((root / "bird").iterdir())[0]
    want = _reference(first, (8, 8), mode)
    nhwc = match_inputs(dict(arrays), _nhwc_model())["x"]
    assert nhwc.shape == (18, 8, 8, 3)
    assert np.allclose(nhwc[0], want, atol=1e-4)
    nchw = match_inputs(load_arrays(ImageFolder(root, preprocess=mode)), _model())["x"]
    assert nchw.shape == (18, 3, 8, 8)
    assert np.allclose(nchw[np.array([0, 5])], nhwc[np.array([0, 5])].transpose(0, 3, 1, 2))


def _nhwc_model():
    g = G(input_shape=("N", 8, 8, 3))
    t = g.node("Transpose", "to_nchw", ["x"], perm=[0, 3, 1, 2])
    g.channels[t] = 3
    y = g.node("GlobalAveragePool", "gap", [g.conv("c0", t, 4)])
    flat = g.node("Flatten", "flat", [y])
    g.channels[flat] = 4
    return g.model([flat])


def test_explicit_mean_and_std_and_grayscale(tmp_path):
    root = _images(tmp_path)
    x = match_inputs(load_arrays(ImageFolder(root, mean=(100.0,), std=(50.0,))),
                     _model(("N", 1, 8, 8)))["x"]
    first = sorted((root / "bird").iterdir())[0]
    with Image.open(first) as img:
        gray = np.asarray(img.convert("L").resize((8, 8), Image.BILINEAR), np.float32)
    assert x.shape == (18, 1, 8, 8) and np.allclose(x[0][0], (gray - 100) / 50, atol=1e-5)


@pytest.mark.training
def test_calibrate_and_fit_from_an_image_folder_in_python(tmp_path):
    root = _images(tmp_path)
    q = quantize_model(_model(), calibration_data=ImageFolder(root, preprocess="tf"))
    q.compile(learning_rate=1e-3)
    history = q.fit(ImageFolder(root, preprocess="tf"), batch_size=4, epochs=1, verbose=0,
                    validation_data=ImageFolder(root, preprocess="tf"))
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"]).all()
    q.save(tmp_path / "out.onnx")


@pytest.mark.training
def test_cli_insert_and_finetune_read_an_image_folder(tmp_path, capsys):
    root = _images(tmp_path)
    src, cal, out = tmp_path / "m.onnx", tmp_path / "cal.onnx", tmp_path / "ft.onnx"
    onnx.save(_model(), src)
    assert main(["insert", str(src), "-o", str(cal), "--calib", str(root),
                 "--preprocess", "torch"]) == 0
    assert main(["finetune", str(cal), "--data", str(root), "--val", str(root), "-o",
                 str(out), "--epochs", "1", "--batch-size", "4", "--preprocess", "torch",
                 "--quiet"]) == 0
    assert out.exists()
    x, labels = load_labelled(str(root), _model())
    assert labels.shape == (18,) and x["x"].shape == (18, 3, 8, 8)


def test_bad_images_and_options_are_one_line_errors(tmp_path):
    root = _images(tmp_path)
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    x = match_inputs(load_arrays(root), _model())["x"]
    with pytest.raises(QdqError, match=r"broken.png: not a readable image"):
        x[np.arange(len(x))]
    with pytest.raises(QdqError, match="unknown image preprocessing 'keras'"):
        ImageFolder(root, preprocess="keras")
    with pytest.raises(QdqError, match="std must be positive"):
        ImageFolder(root, std=(0.0,))
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(QdqError, match="no images"):
        load_arrays(ImageFolder(empty))
    g = G(input_shape=("N", 4))
    flat_model = g.model([g.unary("Relu", "r", "x")])
    with pytest.raises(QdqError, match="an image folder feeds a 4-D input"):
        match_inputs(load_arrays(root), flat_model)


@pytest.mark.parametrize("command", ["calibrate", "inspect", "report", "sensitivity"])
def test_every_data_command_reads_an_image_folder(tmp_path, capsys, command):
    root = _images(tmp_path)
    src, q = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_model(), src)
    assert main(["insert", str(src), "-o", str(q)]) == 0
    out = tmp_path / "out"
    argv = {"calibrate": ["calibrate", str(q), "--data", str(root), "-o", str(out)],
            "inspect": ["inspect", str(q), "--data", str(root)],
            "report": ["report", str(q), "--data", str(root), "-o", str(out)],
            "sensitivity": ["sensitivity", str(src), "--data", str(root), "--json",
                            str(out)]}[command]
    capsys.readouterr()
    assert main([*argv, "--preprocess", "tf"]) == 0
    printed = capsys.readouterr().out
    if command == "inspect":
        assert "layer output (float vs Q/DQ)" in printed
    elif command == "sensitivity":
        assert "(18 samples)" in printed
    else:
        assert out.exists()
