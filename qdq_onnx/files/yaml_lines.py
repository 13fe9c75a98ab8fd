"""YAML loading that remembers line numbers, so rule and spec errors can say file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qdq_onnx.errors import QdqError


class LineDict(dict):
    """A dict from YAML that knows the (1-based) line it started on."""

    line: int = 0


# libyaml's parser when the wheel has it (about 10x faster on the rule files), the
# pure-Python one otherwise; both keep node marks, so line numbers work with either.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc,valid-type]
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise QdqError(
                f"{getattr(loader, 'source_name', '<yaml>')}:{key_node.start_mark.line + 1}: "
                f"duplicate key {key!r}"
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely (no Python objects), with line numbers on every mapping."""
    p = Path(path)
    if not p.is_file():
        raise QdqError(f"{p}: no such file")
    text = p.read_text(encoding="utf-8")
    loader = _Loader(text)
    loader.source_name = str(p)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise QdqError(f"{where}: YAML syntax error: {problem}") from exc
    finally:
        loader.dispose()


def where(source: str, obj: Any) -> str:
    line = getattr(obj, "line", 0)
    return f"{source}:{line}" if line else source
