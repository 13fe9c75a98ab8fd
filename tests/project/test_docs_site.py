"""The docs site: its generated pages (CLI, rules, results) are what scripts/build_docs.py
writes from the code, the rule files and bench/results (stale is a failure), MkDocs builds
it with warnings as errors, and every code block of the README and the docs is checked:
Python compiles, every `qdq-onnx` command line parses with the CLI's own parser."""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def test_the_generated_pages_are_fresh():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mkdocs_builds_the_site_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")  # the `docs` extra: both environments install it
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def _blocks(kind: str):
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang in kind:
                yield page.relative_to(ROOT), body


def test_every_python_block_compiles():
    blocks = list(_blocks(("python",)))
    assert blocks
    for page, body in blocks:
        ast.parse(body, filename=str(page))


def _command_lines(body: str) -> list[str]:
    joined = body.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        found = re.search(r"(?:^|\s)(qdq-onnx\s.*)$", line)
        if found and not line.startswith(("pip ", "$(")):
            out.append(found.group(1))
    return out


def test_every_command_line_in_the_docs_parses():
    from qdq_onnx.cli.main import build_parser

    parser = build_parser()
    lines = [(page, cmd) for page, body in _blocks(("sh", "bash", "console", ""))
             for cmd in _command_lines(body)]
    assert len(lines) >= 5
    bad = []
    for page, cmd in lines:
        argv = shlex.split(cmd)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            bad.append(f"{page}: {cmd}")
    assert bad == []
