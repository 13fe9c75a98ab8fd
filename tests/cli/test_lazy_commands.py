"""The CLI imports only the subcommand it runs, and that subcommand's parser is the one the
full parser holds."""

import argparse
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import G

from qdq_onnx.cli.main import COMMAND_NAMES, _command_named, build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(parser: argparse.ArgumentParser) -> list[tuple]:
    return [(tuple(a.option_strings), a.dest, repr(a.default), a.nargs,
             tuple(a.choices or ()), a.help) for a in parser._actions]


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_a_command_built_alone_is_the_command_of_the_full_parser(name):
    alone = _subparsers(build_parser(name))
    assert list(alone) == [name]
    assert _options(alone[name]) == _options(_subparsers(build_parser())[name])
    assert alone[name].description == _subparsers(build_parser())[name].description


@pytest.mark.parametrize("argv,expected", [
    (["insert", "m.onnx"], "insert"),
    (["-v", "-q", "--debug", "lint", "m.onnx"], "lint"),
    (["-q", "rules", "--help"], "rules"),
    (["--help"], None), (["-h", "insert"], None), (["--version"], None),
    (["insrt", "m.onnx"], None),  # a typo: the full parser says which commands exist
    ([], None),
])
def test_the_command_is_the_first_word_that_is_not_a_global_option(argv, expected):
    assert _command_named(argv) == expected


def test_a_typo_still_lists_every_command(capsys):
    from qdq_onnx.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["insrt", "m.onnx"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'insrt'" in err and all(n in err for n in COMMAND_NAMES)


def test_insert_imports_no_other_subcommand(tmp_path):
    g = G(input_shape=(1, 3, 8, 8))
    model = tmp_path / "m.onnx"
    onnx.save(g.model([g.conv("c0", "x", 4)]), model)
    np.save(tmp_path / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    code = ("import sys; from qdq_onnx.cli.main import main; "
            f"rc = main(['-q', 'insert', {str(model)!r}, '-o', {str(tmp_path / 'q.onnx')!r}]); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('qdq_onnx.cli.')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    rc, loaded = res.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "0" and (tmp_path / "q.onnx").is_file()
    commands = {m for m in eval(loaded) if m.endswith("_cmd")}  # noqa: S307 - our own print
    assert commands == {"qdq_onnx.cli.insert_cmd"}
