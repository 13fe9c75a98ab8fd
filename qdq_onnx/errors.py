"""Error types and the exit codes the CLI maps them to (one table for the CLI, the docs
and the tests)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FINDINGS = 1  # the command ran and found problems (lint errors)
    BAD_INPUT = 2  # the input or the request is wrong: a one-line message says what
    INTERNAL = 3  # a bug in qdq-onnx: the traceback is shown
    WORKER_FAILED = 4  # a rank of a distributed run died or stopped answering
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


EXIT_CODE_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FINDINGS: "the command ran and found problems (`lint`: errors in the model)",
    ExitCode.BAD_INPUT: "bad input or usage, or the environment refused (disk full, "
                        "permissions): a one-line message naming the problem, no "
                        "traceback unless --debug, no output written",
    ExitCode.INTERNAL: "internal error, a bug in qdq-onnx: the traceback is printed",
    ExitCode.WORKER_FAILED: "a rank of a distributed run (--workers) died or stopped "
                            "answering: one line names it; every rank was stopped and "
                            "the last checkpoint is kept",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C or SIGTERM): no output written, except "
                          "`finetune`, which writes the weights reached and keeps the "
                          "checkpoint",
}


class QdqError(Exception):
    """A problem with the user's input or request.

    The CLI prints the message on one line and exits with ExitCode.BAD_INPUT; the message
    must name the problem and, where possible, what to do about it.
    """


class UnsupportedModelError(QdqError):
    """The model is valid ONNX but outside what qdq-onnx supports (opset, ops, structure)."""


class SpecError(QdqError):
    """A quantization spec (Python or YAML) names something that does not exist or contradicts
    itself."""


class SettingError(QdqError):
    """A setting (a field of one of the config objects) has a value it cannot take.

    `setting` is the field's name: library messages name settings, and the CLI replaces the
    name by its flag (`learning_rate` -> `--lr`)."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting, self.problem = setting, problem
        super().__init__(f"{setting} {problem}")


class TrainingStopped(QdqError):
    """Training stopped on a NaN/Inf loss; the last good weights were kept."""


class RuntimeMissing(QdqError):
    """An optional runtime (onnxruntime, onnxruntime-training, TensorFlow) is not installed;
    the message names the extra that brings it."""
