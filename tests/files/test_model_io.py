"""Model I/O: streaming serialisation, atomic writes, load errors."""

import io

import helpers
import onnx
import pytest
from helpers import G

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import (
    load_model,
    load_model_file,
    save_model_atomic,
    write_streaming,
)


def _model():
    g = G()
    m = g.model([g.conv("c1", g.conv("c0", "x", 4), 4)])
    m.metadata_props.add(key="k", value="v")
    m.producer_name = "test"
    m.graph.doc_string = "doc"
    return m


def test_streaming_write_parses_back_to_the_same_model():
    m = _model()
    buf = io.BytesIO()
    write_streaming(m, buf)
    back = onnx.ModelProto()
    back.ParseFromString(buf.getvalue())
    assert back == m
    assert back.SerializeToString() == m.SerializeToString()


def test_save_is_atomic_and_a_failing_check_leaves_nothing(tmp_path):
    m = _model()
    out = tmp_path / "m.onnx"
    save_model_atomic(m, out, check="the model")
    assert load_model(out) == m
    broken = onnx.ModelProto()
    broken.CopyFrom(m)
    broken.graph.node[1].input[0] = "no_such_tensor"
    target = tmp_path / "broken.onnx"
    with pytest.raises(QdqError, match="fails the ONNX checker"):
        save_model_atomic(broken, target, check="the model")
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_missing_output_folder_is_a_clear_error(tmp_path):
    with pytest.raises(QdqError, match="does not exist"):
        save_model_atomic(_model(), tmp_path / "nope" / "m.onnx")


def test_external_data_outside_model_folder_is_refused(tmp_path):
    m = _model()
    t = m.graph.initializer[0]
    t.data_location = onnx.TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.external_data.add(key="location", value="../secret.bin")
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    with pytest.raises(QdqError, match="outside"):
        load_model(p)


def test_a_binary_file_loads_as_onnx_load_reads_it_and_owns_its_data(tmp_path):
    m = helpers.small_classifier()
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    loaded = load_model_file(path).model
    assert loaded.SerializeToString() == onnx.load(path).SerializeToString()
    path.write_bytes(b"")  # parsed from a memory map: nothing may still point into it
    assert loaded.SerializeToString() == m.SerializeToString()


def test_text_formats_load_through_onnx(tmp_path):
    m = helpers.small_classifier()
    path = tmp_path / "m.textproto"
    onnx.save(m, path, format="textproto")
    assert load_model_file(path).model.SerializeToString() == m.SerializeToString()


def test_a_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")  # ENODEV: a file system without mmap

    m = helpers.small_classifier()
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    monkeypatch.setattr(mmap, "mmap", refuse)
    assert load_model_file(path).model.SerializeToString() == m.SerializeToString()
