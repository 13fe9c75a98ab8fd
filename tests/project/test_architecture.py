"""The structure the Architecture page (docs/architecture.md) promises, checked: imports
only go down the stage order, the op taxonomy lives in one place, every lint check has its rule-file
entry, and modules and functions stay small enough to read in one sitting."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qdq_onnx"

# Lowest first. A module may import its own layer and the layers before it, never later
# ones: e.g. placement never imports finetune or diagnostics.
LAYERS = ["version", "lazy", "errors", "types", "progress", "files", "parallel", "data", "graph",
          "convert", "placement", "quantize", "precision", "finetune", "diagnostics", "pipeline",
          "compat", "cli", "__init__", "__main__"]
# The front ends (the CLI, the original toolkit's API) go through the pipeline façade: they
# may import it and these foundations, nothing of the stages behind it.
FACADE_USERS = ("cli", "compat")
FACADE = {"pipeline", "errors", "data", "version"}
SCHEME_MODULE = PACKAGE / "types" / "scheme.py"
# Spellings of "int8" that are not a quantization: each with its reason.
NOT_QUANTIZATION = {
    ("files/onnx_files.py", "127"): "protobuf varints carry 7 bits per byte (0x7F)",
    ("compat/utils.py", "'int8'"): "the original toolkit's asset folder is named int8",
    ("diagnostics/html_report.py", "'int8'"): "a key of the inference benchmark's JSON",
}
WEIGHTED_OP_NAMES = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
TAXONOMY_MODULE = PACKAGE / "graph" / "ops.py"


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.ImportFrom) and node.module == "qdq_onnx":
            # `from qdq_onnx import pipeline` imports the submodule qdq_onnx.pipeline
            out.extend((node.lineno, f"qdq_onnx.{a.name}") for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("qdq_onnx"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names
                       if a.name.startswith("qdq_onnx"))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append((node.lineno, "<relative>"))
    return out


def test_every_module_belongs_to_a_layer():
    unknown = {layer_of(module_name(p)) for p in modules()} - set(LAYERS)
    assert unknown == set()


def test_imports_only_go_down_the_stage_order():
    violations = []
    for path in modules():
        me = module_name(path)
        mine = LAYERS.index(layer_of(me))
        for line, target in imported(ast.parse(path.read_text())):
            assert target != "<relative>", f"{path}:{line}: use absolute qdq_onnx imports"
            if LAYERS.index(layer_of(target)) > mine:
                violations.append(f"{me}:{line} imports {target}")
    assert violations == []


def test_front_ends_use_only_the_pipeline_facade():
    violations = []
    for path in modules():
        me = module_name(path)
        if layer_of(me) not in FACADE_USERS:
            continue
        for line, target in imported(ast.parse(path.read_text())):
            if layer_of(target) not in FACADE | {layer_of(me)}:
                violations.append(f"{me}:{line} imports {target}")
    assert violations == []


def _int8_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """INT8 written down: the range ends 127 and -128, the type names int8/INT8 (as
    attributes, np.int8 or TensorProto.INT8, or as strings)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value == 127:
            found.append((node.lineno, "127"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and \
                isinstance(node.operand, ast.Constant) and node.operand.value == 128:
            found.append((node.lineno, "-128"))
        elif isinstance(node, ast.Attribute) and node.attr in ("int8", "INT8"):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Constant) and node.value in ("int8", "INT8"):
            found.append((node.lineno, repr(node.value)))
    return found


def test_int8_is_written_down_only_in_the_scheme_module():
    offenders, exempt_used = [], set()
    for path in modules():
        if path == SCHEME_MODULE:
            continue
        rel = str(path.relative_to(PACKAGE))
        for line, what in _int8_literals(ast.parse(path.read_text())):
            if (rel, what) in NOT_QUANTIZATION:
                exempt_used.add((rel, what))
            else:
                offenders.append(f"{rel}:{line} {what}")
    assert offenders == []
    assert exempt_used == set(NOT_QUANTIZATION)  # no stale exemption


def test_the_int8_literal_check_finds_what_it_looks_for():
    tree = ast.parse("import numpy as np\nx = np.zeros(3, np.int8)\nlo, hi = -128, 127\n"
                     "t = onnx.TensorProto.INT8\nname = 'int8'\nok = (128, 'int8-4bit', 127.5)")
    assert sorted(w for _, w in _int8_literals(tree)) == sorted(
        ["int8", "-128", "127", "INT8", "'int8'"])
    assert SCHEME_MODULE.is_file() and _int8_literals(ast.parse(SCHEME_MODULE.read_text()))


def test_weighted_op_names_are_spelled_out_only_in_the_taxonomy():
    offenders = []
    for path in modules():
        if path == TAXONOMY_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in WEIGHTED_OP_NAMES:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_every_lint_check_has_its_rule_file_entry_and_back():
    from qdq_onnx.diagnostics.lint import CHECKS
    from qdq_onnx.placement.rules import load_rules

    rules = load_rules("tensorrt")
    assert set(rules.lint) == set(CHECKS)


def test_every_pattern_kind_is_declared_and_used_by_the_tensorrt_rules():
    from qdq_onnx.placement.patterns import PATTERN_KINDS
    from qdq_onnx.placement.rules import load_rules

    rules = load_rules("tensorrt")
    assert set(rules.patterns) == set(PATTERN_KINDS)
    for kind in PATTERN_KINDS.values():
        assert set(rules.patterns[kind.name].options) == set(kind.options)


def test_placement_and_lint_read_one_taxonomy():
    from qdq_onnx.placement.rules import load_rules

    trt, ntt = load_rules("tensorrt"), load_rules("nvidia-tf-toolkit")
    assert trt.fusible_followers and trt.precision_neutral
    assert ntt.taxonomy == trt.taxonomy  # inherited, not written twice
    assert trt.weighted_ops() == WEIGHTED_OP_NAMES


@pytest.mark.parametrize("limit_lines,limit_function", [(400, 60)])
def test_modules_and_functions_stay_small(limit_lines, limit_function):
    big_modules, big_functions = [], []
    for path in modules():
        text = path.read_text()
        if len(text.splitlines()) > limit_lines:
            big_modules.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit_function:
                    big_functions.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length})")
    assert big_modules == []
    assert big_functions == []


def test_library_code_does_not_print():
    """Output is the CLI's business: library code logs or takes a callback."""
    offenders = []
    for path in modules():
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "print":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


KNOWN_CYCLES: set[frozenset[str]] = set()  # none left; name one here only with its reason


def _imported_modules(tree: ast.AST, names: set[str]) -> set[str]:
    """The package modules a module imports, at any level: `from pkg import sub` is the
    submodule `pkg.sub` where one exists, else `pkg`."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in names else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in names}


def _import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in modules()}
    return {name: _imported_modules(ast.parse(path.read_text()), set(paths)) - {name}
            for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    """Function-level imports count: a lazy import hides a cycle, it does not remove it."""
    assert set(_cycles(_import_graph())) - KNOWN_CYCLES == set()


def test_the_cycle_check_finds_what_it_looks_for():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        frozenset({"a", "b", "c"})]


# The process-global world is read where a run starts (the pipeline façade, the CLI) and
# where it is made (parallel/); every stage below takes a RunContext.
WORLD_READERS = ("pipeline", "cli", "parallel")


def test_no_stage_reads_the_process_global_world():
    found = []
    for path in modules():
        if layer_of(module_name(path)) in WORLD_READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and (
                    getattr(node.func, "id", None) == "world"
                    or getattr(node.func, "attr", None) == "world"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def _silent_int8(tree: ast.AST) -> list[int]:
    """Lines where a scheme silently becomes INT8: a parameter defaulting to INT8, or a
    `.get(key, INT8)` fallback."""
    def is_int8(node):
        return (isinstance(node, ast.Name) and node.id == "INT8") or (
            isinstance(node, ast.Attribute) and node.attr == "INT8"
            and getattr(node.value, "id", "") != "TensorProto")
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d]
            lines += [d.lineno for d in defaults if is_int8(d)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get" \
                and len(node.args) == 2 and is_int8(node.args[1]):
            lines.append(node.lineno)
    return lines


def test_no_scheme_silently_defaults_to_int8():
    """A forgotten scheme fails loudly (a missing argument, a KeyError) instead of
    quantizing as INT8."""
    found = [f"{p.relative_to(PACKAGE)}:{line}" for p in modules()
             for line in _silent_int8(ast.parse(p.read_text()))]
    assert found == []
    assert _silent_int8(ast.parse("def f(x, scheme=INT8): pass\ny = d.get(k, INT8)")) == [1, 2]


def test_every_stage_folder_has_its_test_folder():
    """tests/ mirrors the package: each subpackage with code has tests/NAME/test_*.py."""
    tests = PACKAGE.parent / "tests"
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    missing = sorted(s for s in stages if not list((tests / s).glob("test_*.py")))
    assert missing == []
