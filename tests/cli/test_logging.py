"""`-v`/`-q` through stdlib logging: the default shows the commands' notes, `-q` hides them,
`-qq` leaves errors only, `-v` adds the library's steps with their times; `--debug` keeps
the chain of causes behind a one-line error."""

import numpy as np
import onnx
import pytest
from helpers import small_classifier

from qdq_onnx.cli.main import main


@pytest.fixture
def files(tmp_path):
    onnx.save(small_classifier(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(
        size=(16, 3, 8, 8)).astype(np.float32))
    return tmp_path


def _insert(files, *flags):
    return main([*flags, "insert", str(files / "m.onnx"), "--calib", str(files / "d.npz"),
                 "-o", str(files / "q.onnx")])


def test_the_default_shows_notes_and_quiet_hides_them(files, capsys):
    assert _insert(files) == 0
    default = capsys.readouterr().err
    assert "note: " in default and "[qdq_onnx" not in default
    assert _insert(files, "-q") == 0
    quiet = capsys.readouterr()
    assert "note: " not in quiet.err and "wrote" in quiet.out  # the result line stays
    assert _insert(files, "-qq") == 0
    assert capsys.readouterr().err == ""


def test_verbose_shows_the_library_steps_with_times(files, capsys):
    assert _insert(files, "-v") == 0
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if line.startswith("note: [qdq_onnx.pipeline]")]
    assert any("calibrated" in s for s in steps) and any("saved" in s for s in steps), err
    assert all(s.endswith(" s)") for s in steps)
    assert "note: " in err  # the command's own notes as well


def test_debug_keeps_the_cause_of_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf" * 10)
    assert main(["lint", str(bad)]) == 2
    plain = capsys.readouterr().err.strip()
    assert len(plain.splitlines()) == 1
    assert main(["--debug", "lint", str(bad)]) == 2
    debug = capsys.readouterr().err
    assert "The above exception was the direct cause of the following exception" in debug
    assert debug.strip().splitlines()[-1] == plain
