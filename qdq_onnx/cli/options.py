"""Option groups shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import QdqError
from ..model_io import same_file


def add_output(parser: argparse.ArgumentParser, what: str = "ONNX file") -> None:
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help=f"where to write the {what} (written atomically: a temporary "
                             "file renamed into place, never a partial file)")


def add_placement(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("placement")
    g.add_argument("--mode", choices=("full", "partial"), default=None,
                   help="full: every op the rules support (spec/cases adjust); partial: only "
                        "what the spec names (default: the spec file's mode, else full)")
    g.add_argument("--spec", metavar="SPEC.yaml",
                   help="per-layer deviations: Keras layer names/classes, ONNX op types, node "
                        "names or regexes, and built-in case bundles (see README)")
    g.add_argument("--rules", metavar="RULES.yaml",
                   help="rule file or bundled rule-set name (default: tensorrt; also: "
                        "nvidia-tf-toolkit)")
    g.add_argument("--case", action="append", default=[], metavar="NAME",
                   help="a built-in custom QDQ case to apply (repeatable), e.g. "
                        "ResNetV1QDQCase")


def check_in_out(inp: str, out: str) -> None:
    if same_file(inp, out) or Path(inp).resolve() == Path(out).resolve():
        raise QdqError(f"the output {out} is the input file; write to another path "
                       "(inputs are never modified)")
