"""The command line's stderr lines through stdlib logging, at the level `-v`/`-q` choose: the
commands' notes and warnings (logger `qdq_onnx.cli`: "note: ...", "warning: ...") and the
library's own loggers (`qdq_onnx.*`: stage steps and timings, shown from `-v`)."""

from __future__ import annotations

import logging
import sys

CLI = logging.getLogger("qdq_onnx.cli")
_PREFIX = {logging.DEBUG: "debug: ", logging.INFO: "note: ", logging.WARNING: "warning: ",
           logging.ERROR: "error: ", logging.CRITICAL: "error: "}


class _Stderr(logging.Handler):
    """Writes to the current sys.stderr (a test's capture, a rank's redirect), prefixed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            where = "" if record.name.startswith("qdq_onnx.cli") else f"[{record.name}] "
            prefix = _PREFIX.get(record.levelno, "")
            sys.stderr.write(f"{prefix}{where}{record.getMessage()}\n")
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def configure(verbose: int = 0, quiet: int = 0) -> None:
    """Default: the commands' notes and warnings, the library's warnings. `-v`: the
    library's steps too (`-vv`: its debug lines); `-q`: warnings only; `-qq`: errors only."""
    root = logging.getLogger("qdq_onnx")
    root.handlers = [_Stderr()]
    root.propagate = False
    if quiet:
        level = logging.WARNING if quiet == 1 else logging.ERROR
        root.setLevel(level)
        CLI.setLevel(level)
        return
    root.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    CLI.setLevel(logging.INFO)

def note(line: str) -> None:
    """A command's note ("note: LINE" on stderr unless -q)."""
    CLI.info(line)


def warn(line: str) -> None:
    """A command's warning ("warning: LINE" on stderr unless -qq)."""
    CLI.warning(line)
