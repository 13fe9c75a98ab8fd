"""Entry point: parse, dispatch to one subcommand, map errors to the exit codes of
`qdq_onnx.errors.ExitCode` (0 ok, 1 findings, 2 bad input, 3 internal error, 130 interrupted).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback
from types import ModuleType

from qdq_onnx.errors import EXIT_CODE_MEANINGS, ExitCode, QdqError, SettingError
from qdq_onnx.version import __version__

# The subcommands in `--help` order; each module's `register` adds its parser.
COMMAND_NAMES = ("convert", "insert", "calibrate", "finetune", "inspect", "lint",
                 "sensitivity", "report", "rules")


def command_module(name: str) -> ModuleType:
    """The module of subcommand `name` (qdq_onnx.cli.NAME_cmd)."""
    return importlib.import_module(f"qdq_onnx.cli.{name}_cmd")


def _command_named(argv: list[str]) -> str | None:
    """The subcommand `argv` runs, when its first word that is not a global option names
    one: then only that subcommand's module is imported (the others' imports cost an
    insert about 20 ms); None (a typo, none, only --help) builds them all."""
    for word in argv:
        if word in ("-h", "--help", "--version"):
            return None
        if not word.startswith("-"):
            return word if word in COMMAND_NAMES else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: every subcommand, or only the subcommand `only`."""
    parser = argparse.ArgumentParser(
        prog="qdq-onnx",
        description="Prepare ONNX models for TensorRT INT8: convert Keras models, place "
                    "Q/DQ pairs by TensorRT's rules, calibrate and fine-tune.",
        epilog="Exit codes: " + "; ".join(f"{int(c)} {m.split(':')[0]}"
                                           for c, m in EXIT_CODE_MEANINGS.items())
               + ". Run 'qdq-onnx COMMAND -h' for each command's options.")
    parser.add_argument("--version", action="version", version=f"qdq-onnx {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback for input errors too, with the "
                             "error that caused each")
    parser.add_argument("-v", "--verbose", dest="log_verbose", action="count", default=0,
                        help="show the library's steps and timings (-vv: its debug lines)")
    parser.add_argument("-q", "--quiet", dest="log_quiet", action="count", default=0,
                        help="warnings only, no notes (-qq: errors only); before the "
                             "command: qdq-onnx -q insert ...")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in (only,) if only else COMMAND_NAMES:
        command_module(name).register(sub)
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

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_named(argv))
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    import warnings

    from qdq_onnx.cli.logs import configure

    configure(args.log_verbose, args.log_quiet)
    # Commands print the library's warnings (the clipping guard) as their own lines.
    warnings.filterwarnings("ignore", message="calibration .* clips")
    launched = _launched(args, argv)
    if launched is not None:
        return launched
    code, line = _command(args)
    if line:
        print(line, file=sys.stderr)
    if getattr(args, "workers", None) is None:
        return code
    from qdq_onnx.pipeline import plumbing

    return plumbing.finish_rank(plumbing.world(), code, line)


def _command(args: argparse.Namespace) -> tuple[int, str | None]:
    """Run the command: (exit code, the one error line to print, if any)."""
    try:
        if getattr(args, "workers", None) is not None:
            from qdq_onnx.pipeline import plumbing

            world = plumbing.world()
            plumbing.record_rank(world)
            if not world.is_root:  # rank 0 prints the run's lines; errors still show
                import os

                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - until the process ends
        from qdq_onnx.cli.options import open_image_folders

        open_image_folders(args)
        return int(args.run(args) or 0), None
    except KeyboardInterrupt:
        return (ExitCode.INTERRUPTED,
                f"qdq-onnx {args.command}: interrupted; no output was written")
    except Exception as exc:  # noqa: BLE001 - every error gets its exit code here
        return _report(exc, args)


def _launched(args: argparse.Namespace, argv: list[str]) -> int | None:
    """`--workers N` (N > 1) outside an MPI launcher: the exit code of the same command in
    N local ranks; None to run the command here."""
    if getattr(args, "workers", None) is None:
        return None
    from qdq_onnx.pipeline import plumbing

    try:
        config = plumbing.make_config(plumbing.ParallelConfig, {
            "workers": args.workers, "collective_timeout": args.collective_timeout})
    except SettingError as exc:
        print(f"qdq-onnx {args.command}: error: {_message(exc, args)}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if config.workers == 1 or plumbing.launched_by_mpi():  # here, or one of the ranks
        return None
    try:
        result = plumbing.launch(_without_workers(argv), config)
    except QdqError as exc:
        print(f"qdq-onnx {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if result.failure:
        print(f"qdq-onnx {args.command}: error: {result.failure}", file=sys.stderr)
    return result.code


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def _report(exc: Exception, args: argparse.Namespace) -> tuple[int, str | None]:
    """(exit code, one error line) the way the error's kind wants: one line for bad input
    and the environment (disk full, permissions), the traceback (printed) for a bug."""
    from qdq_onnx.pipeline.plumbing import runtime_failure

    original, exc = exc, runtime_failure(exc) or exc  # onnxruntime's: one line naming the node
    if isinstance(exc, QdqError):
        message = _message(exc, args)
    elif isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRORS:
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    else:
        traceback.print_exception(exc)
        return ExitCode.INTERNAL, (f"qdq-onnx {args.command}: internal error (a bug in "
                                   "qdq-onnx; please report it with the traceback above)")
    if args.debug:
        traceback.print_exception(original)
    code = getattr(exc, "exit_code", ExitCode.BAD_INPUT)  # a distributed run's own failures
    return code, f"qdq-onnx {args.command}: error: {message}"

if __name__ == "__main__":
    sys.exit(main())
