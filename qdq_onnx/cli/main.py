"""Entry point: parse, dispatch to one subcommand, map errors to the exit codes of
`qdq_onnx.errors.ExitCode` (0 ok, 1 findings, 2 bad input, 3 internal error, 130 interrupted).
"""

from __future__ import annotations

import argparse
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
from qdq_onnx.errors import EXIT_CODE_MEANINGS, ExitCode, QdqError
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
    return parser


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
    except QdqError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"qdq-onnx {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print(f"qdq-onnx {args.command}: interrupted; no output was written", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(f"qdq-onnx {args.command}: internal error (a bug in qdq-onnx; please report it "
              "with the traceback above)", file=sys.stderr)
        return ExitCode.INTERNAL


if __name__ == "__main__":
    sys.exit(main())
