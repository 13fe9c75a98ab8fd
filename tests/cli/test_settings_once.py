"""Each CLI setting is validated in one place, its config class: the command line stores
options under the settings' names and checks none of them itself (walked over every field
of every config class), and a bad value is the class's message with the flag's name."""

import ast
import dataclasses
from pathlib import Path

import pytest

from qdq_onnx.cli.main import build_parser, main
from qdq_onnx.diagnostics.config import ReportConfig, SensitivityConfig
from qdq_onnx.finetune.config import FitConfig, TrainConfig
from qdq_onnx.parallel.config import ParallelConfig
from qdq_onnx.placement.config import PlacementConfig
from qdq_onnx.precision.config import PrecisionConfig
from qdq_onnx.quantize.accuracy_guard import AccuracyGuardConfig
from qdq_onnx.quantize.config import CalibrationConfig

CONFIGS = (PlacementConfig, CalibrationConfig, AccuracyGuardConfig, PrecisionConfig,
           TrainConfig, FitConfig, ParallelConfig, SensitivityConfig, ReportConfig)
CLI = Path(__file__).resolve().parents[2] / "qdq_onnx" / "cli"


# Options that are two spellings of one setting, whose agreement only the CLI can check:
# --resume DIR and --checkpoint-dir DIR both name the checkpoint folder.
SPELLINGS = {"resume", "checkpoint_dir"}


def _fields() -> set[str]:
    return {f.name for c in CONFIGS for f in dataclasses.fields(c)}


def _cli_dests() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {a.dest for p in sub.choices.values() for a in p._actions}


def _checks_of_settings(tree: ast.AST, fields: set[str]) -> list[str]:
    """`args.<setting>` compared, or tested with math.isfinite, in the CLI's own code."""
    def setting(node):
        return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
            and node.value.id == "args" and node.attr in fields
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and not all(
                isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):  # `is None`: no check
            operands = (node.left, *node.comparators)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "isfinite":
            operands = tuple(node.args)
        else:
            continue
        if any(setting(n) for n in operands):
            found.append(f"{node.lineno}")
    return found


def test_the_cli_checks_no_setting_itself():
    fields = (_fields() & _cli_dests()) - SPELLINGS
    assert {"workers", "collective_timeout", "learning_rate", "batch_size", "method",
            "high_precision"} <= fields  # the walk covers the settings the CLI sets
    offenders = [f"{p.name}:{line}" for p in sorted(CLI.glob("*.py"))
                 for line in _checks_of_settings(ast.parse(p.read_text()), fields)]
    assert offenders == []


def test_the_check_finds_what_it_looks_for():
    tree = ast.parse("if args.workers < 1: pass\nok = math.isfinite(args.learning_rate)\n"
                     "fine = args.output == 'x'")
    assert _checks_of_settings(tree, {"workers", "learning_rate"}) == ["1", "2"]


@pytest.mark.parametrize("argv,message", [
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--collective-timeout", "-3"], "--collective-timeout must be a positive number of "
                                     "seconds, got -3.0"),
])
def test_a_bad_parallel_setting_is_the_config_message_with_the_flag(argv, message, tmp_path,
                                                                      capsys):
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"),
                 "-o", str(tmp_path / "o.onnx"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"qdq-onnx calibrate: error: {message}"


def test_parallel_config_is_validated_when_made():
    from qdq_onnx.errors import SettingError

    for bad in ({"workers": 0}, {"workers": True}, {"collective_timeout": 0},
                {"collective_timeout": float("inf")}):
        with pytest.raises(SettingError):
            ParallelConfig(**bad)
    assert ParallelConfig(collective_timeout=5).timeout_s == 5.0
    assert ParallelConfig().timeout_s == 600.0
