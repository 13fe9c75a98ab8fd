"""Entry point: parse, dispatch to one subcommand, map errors to the exit codes of
`qdq_onnx.errors.ExitCode` (0 ok, 1 findings, 2 bad input, 3 internal error, 130 interrupted).
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback

from qdq_onnx.cli import (
    calibrate_cmd,
    convert_cmd,
    finetune_cmd,
    insert_cmd,
    inspect_cmd,
    lint_cmd,
    report_cmd,
    rules_cmd,
    sensitivity_cmd,
)
from qdq_onnx.cli.options import open_image_folders
from qdq_onnx.errors import EXIT_CODE_MEANINGS, ExitCode, QdqError, SettingError
from qdq_onnx.version import __version__

COMMANDS = (convert_cmd, insert_cmd, calibrate_cmd, finetune_cmd, inspect_cmd, lint_cmd,
            sensitivity_cmd, report_cmd, rules_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdq-onnx",
        description="Prepare ONNX models for TensorRT INT8: convert Keras models, place "
                    "Q/DQ pairs by TensorRT's rules, calibrate and fine-tune.",
        epilog="Exit codes: " + "; ".join(f"{int(c)} {m.split(':')[0]}"
                                           for c, m in EXIT_CODE_MEANINGS.items())
               + ". Run 'qdq-onnx COMMAND -h' for each command's options.")
    parser.add_argument("--version", action="version", version=f"qdq-onnx {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback for input errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    for command in sub.choices.values():
        command.set_defaults(setting_flags=_flags(command))
    return parser


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Setting name -> the option that sets it (options are stored under the settings'
    names, so a library message naming a setting can name the flag instead)."""
    return {a.dest: max(a.option_strings, key=len) for a in parser._actions
            if a.option_strings and a.dest != "help"}


def _message(exc: QdqError, args: argparse.Namespace) -> str:
    if isinstance(exc, SettingError):
        flag = getattr(args, "setting_flags", {}).get(exc.setting)
        if flag:
            return f"{flag} {exc.problem}"
    return str(exc)


# OSErrors of the environment (the disk, permissions), not of qdq-onnx: one line, exit 2.
_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                       errno.EIO}


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    import warnings

    # Commands print the library's warnings (the clipping guard) as their own lines.
    warnings.filterwarnings("ignore", message="calibration .* clips")
    try:
        open_image_folders(args)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"qdq-onnx {args.command}: interrupted; no output was written", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every error gets its exit code here
        return _report(exc, args)


def _report(exc: Exception, args: argparse.Namespace) -> int:
    """Print the error the way its kind wants and return its exit code: one line for bad
    input and the environment (disk full, permissions), the traceback for a bug."""
    from qdq_onnx.pipeline import runtime_failure

    original, exc = exc, runtime_failure(exc) or exc  # onnxruntime's: one line naming the node
    if isinstance(exc, QdqError):
        message = _message(exc, args)
    elif isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRORS:
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    else:
        traceback.print_exception(exc)
        print(f"qdq-onnx {args.command}: internal error (a bug in qdq-onnx; please report it "
              "with the traceback above)", file=sys.stderr)
        return ExitCode.INTERNAL
    if args.debug:
        traceback.print_exception(original)
    print(f"qdq-onnx {args.command}: error: {message}", file=sys.stderr)
    return ExitCode.BAD_INPUT

if __name__ == "__main__":
    sys.exit(main())
