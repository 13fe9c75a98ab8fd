"""QuantizationSpec (the original toolkit's API) and its YAML form, resolved to proposals.

Entries select layers by Keras layer name or class (from the layer map) or, for models that
did not come from Keras, ONNX nodes by op type, exact name or regex.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdq_onnx.errors import SpecError
from qdq_onnx.files.yaml_lines import load_yaml, where
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import Layer, LayerGraph
from qdq_onnx.placement.proposals import PRIORITY_SPEC_CLASS, PRIORITY_SPEC_NAME, Proposal
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.placement.slots import data_and_weight_slots, slot_proposal

SELECTORS = ("name", "class", "op_type", "node", "node_regex")
_ENTRY_KEYS = set(SELECTORS) | {"quantize_input", "quantize_weight", "quantization_index"}
_FILE_KEYS = {"mode", "layers", "cases"}


@dataclass(frozen=True)
class LayerConfig:
    """One spec entry. `selector` says what `name` is: a Keras layer name ("name"), a Keras
    class ("class"), an ONNX op type, an exact ONNX node name, or a node-name regex."""

    name: str
    selector: str = "name"
    quantize_input: bool = True
    quantize_weight: bool = True
    quantization_index: tuple[int, ...] | None = None
    source: str = ""

    @property
    def is_keras_class(self) -> bool:
        return self.selector == "class"

    @property
    def leaves_float(self) -> bool:
        return not self.quantize_input and not self.quantize_weight \
            and self.quantization_index is None

    def settings(self) -> tuple:
        return (self.quantize_input, self.quantize_weight, self.quantization_index)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {self.selector: self.name, "quantize_input": self.quantize_input,
                             "quantize_weight": self.quantize_weight}
        if self.quantization_index is not None:
            d["quantization_index"] = list(self.quantization_index)
        return d


def _broadcast(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise SpecError(f"QuantizationSpec.add: {what} has {len(value)} items but name "
                            f"has {n}; give one per name or a single value")
        return list(value)
    return [value] * n


class QuantizationSpec:
    """Per-layer deviations from the default policy (the original toolkit's class).

    `add()` never mutates anything the caller passed in; `quantize_model` copies the spec.
    """

    def __init__(self) -> None:
        self.layers: list[LayerConfig] = []

    def add(self, name: str | Sequence[str], is_keras_class: bool | Sequence[bool] = False,
            quantize_input: bool | Sequence[bool] = True,
            quantize_weight: bool | Sequence[bool] = True,
            quantization_index: Any = None) -> QuantizationSpec:
        """Add entries with the original toolkit's semantics. `name`: a layer name, or a
        Keras class with `is_keras_class=True`; `quantize_input`/`quantize_weight`: what to
        quantize (both False and no index: leave the layer float); `quantization_index`: which
        inputs of a multi-input layer get Q/DQ. Each argument is a scalar or a list as long as
        `name`. Returns the spec (for chaining)."""
        names = [name] if isinstance(name, str) else list(name)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise SpecError("QuantizationSpec.add: name must be a non-empty string or a list "
                            "of them")
        n = len(names)
        classes = _broadcast(is_keras_class, n, "is_keras_class")
        q_in = _broadcast(quantize_input, n, "quantize_input")
        q_w = _broadcast(quantize_weight, n, "quantize_weight")
        if quantization_index is None or (
                isinstance(quantization_index, list) and n > 1
                and all(isinstance(i, int) for i in quantization_index)
                and len(quantization_index) != n):
            indices = [quantization_index] * n
        elif n == 1:
            indices = [quantization_index]
        else:
            indices = _broadcast(quantization_index, n, "quantization_index")
        for nm, cls, qi, qw, idx in zip(names, classes, q_in, q_w, indices):
            self.layers.append(LayerConfig(
                name=nm, selector="class" if cls else "name", quantize_input=bool(qi),
                quantize_weight=bool(qw), quantization_index=_index_tuple(idx, nm)))
        return self

    def add_entry(self, entry: LayerConfig) -> None:
        """Append one validated LayerConfig (the YAML loader's way in)."""
        self.layers.append(entry)

    def copy(self) -> QuantizationSpec:
        """A deep copy (specs passed to quantize_model are never mutated)."""
        return copy.deepcopy(self)

    def named(self) -> set[str]:
        """Layer and node names the spec names explicitly (cases never override them)."""
        return {e.name for e in self.layers if e.selector in ("name", "node")}

    def to_list(self) -> list[dict[str, Any]]:
        """The entries as plain dicts (stored in the plan)."""
        return [e.to_dict() for e in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"QuantizationSpec({self.to_list()!r})"


def _index_tuple(value: Any, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise SpecError(f"{name}: quantization_index must be an integer or a list of integers")
    if any(i < 0 for i in value):
        raise SpecError(f"{name}: quantization_index {list(value)} has a negative index")
    return tuple(value)


def load_spec_file(path: str | Path) -> tuple[QuantizationSpec, str | None, list[str]]:
    """Read a YAML spec: returns (spec, mode or None, built-in case names)."""
    raw = load_yaml(path)
    src = str(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{src}: a spec file is a mapping with 'layers' (and optional 'mode', "
                        "'cases')")
    for key in raw:
        if key not in _FILE_KEYS:
            close = difflib.get_close_matches(str(key), sorted(_FILE_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"{where(src, raw)}: unknown key {key!r}{hint}; a spec file has "
                            "mode, layers and cases")
    mode = raw.get("mode")
    if mode is not None and mode not in ("full", "partial"):
        raise SpecError(f"{where(src, raw)}: mode must be full or partial, got {mode!r}")
    cases = raw.get("cases") or []
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
        raise SpecError(f"{where(src, raw)}: cases must be a list of built-in case names")
    spec = QuantizationSpec()
    layers = raw.get("layers") or []
    if not isinstance(layers, list):
        raise SpecError(f"{where(src, raw)}: layers must be a list of entries")
    for item in layers:
        spec.add_entry(_file_entry(item, where(src, item)))
    return spec, mode, cases


def _file_entry(item: Any, loc: str) -> LayerConfig:
    """One `layers:` entry of a spec file, validated (errors carry file:line)."""
    if not isinstance(item, dict):
        raise SpecError(f"{loc}: each layers entry is a mapping like {{name: conv1}}")
    for key in item:
        if key not in _ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), sorted(_ENTRY_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"{loc}: unknown key {key!r}{hint}")
    chosen = [s for s in SELECTORS if s in item]
    if len(chosen) != 1:
        raise SpecError(f"{loc}: each entry needs exactly one of {', '.join(SELECTORS)}"
                        f" (found {', '.join(chosen) or 'none'})")
    selector = chosen[0]
    value = item[selector]
    if not isinstance(value, str) or not value:
        raise SpecError(f"{loc}: {selector} must be a non-empty string")
    if selector == "node_regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise SpecError(f"{loc}: node_regex {value!r} is not a valid regex: {exc}"
                            ) from exc
    flags = {}
    for key in ("quantize_input", "quantize_weight"):
        v = item.get(key, True)
        if not isinstance(v, bool):
            raise SpecError(f"{loc}: {key} must be true or false")
        flags[key] = v
    try:
        index = _index_tuple(item.get("quantization_index"), value)
    except SpecError as exc:
        raise SpecError(f"{loc}: {exc}") from exc
    return LayerConfig(name=value, selector=selector, quantization_index=index,
                       source=loc, **flags)


# -- resolution --------------------------------------------------------------------------


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _label(entry: LayerConfig) -> str:
    where_from = f" ({entry.source})" if entry.source else ""
    return f"spec entry {entry.selector}={entry.name!r}{where_from}"


def select_layers(entry: LayerConfig, layers: LayerGraph) -> list[Layer]:
    """The layers (or single-node pseudo-layers) an entry selects; SpecError if none."""
    index = layers.index
    if entry.selector == "name":
        layer = layers.find(entry.name)
        if layer is None:
            known = [la.name for la in layers.layers]
            hint = _suggest(entry.name, known)
            if not layers.from_keras and layers.layer_map is None:
                hint += " (this model has no Keras layer map: layer names are ONNX node names)"
            raise SpecError(f"{_label(entry)}: no layer named {entry.name!r}{hint}")
        return [layer]
    if entry.selector == "class":
        hits = [la for la in layers.layers if la.class_name == entry.name]
        if not hits:
            raise SpecError(f"{_label(entry)}: no layer of class {entry.name!r} in the model"
                            f"{_suggest(entry.name, sorted(layers.classes()))}")
        return hits
    nodes = index.nodes
    if entry.selector == "op_type":
        picked = [n for n in nodes if n.op_type == entry.name]
        if not picked:
            ops = sorted({n.op_type for n in nodes})
            raise SpecError(f"{_label(entry)}: no node of op type {entry.name!r}"
                            f"{_suggest(entry.name, ops)}")
    elif entry.selector == "node":
        picked = [index.by_name[entry.name]] if entry.name in index.by_name else []
        if not picked:
            raise SpecError(f"{_label(entry)}: no node named {entry.name!r}"
                            f"{_suggest(entry.name, list(index.by_name))}")
    else:
        rx = re.compile(entry.name)
        picked = [n for n in nodes if rx.search(n.name)]
        if not picked:
            raise SpecError(f"{_label(entry)}: the regex matches no node name")
    return [Layer(n.name, n.op_type, [n.name], [n.name]) for n in picked]


def _onnx_slot_for_keras_index(layers: LayerGraph, layer: Layer, k: int) -> int:
    """Map a Keras input index of a multi-input layer to the anchor node's input slot."""
    node = layers.index.by_name[layer.anchor]
    live = layers.index.live_inputs(node)
    return live[k]


def entry_proposals(entry: LayerConfig, layers: LayerGraph, rules: RuleSet, priority: int,
                    rule_id: str) -> list[Proposal]:
    """Proposals for one spec entry (user spec or a case's output)."""
    index: GraphIndex = layers.index
    out: list[Proposal] = []
    for layer in select_layers(entry, layers):
        tag = layer.name if layers.layer_map is not None else None
        if not layer.nodes:
            if entry.leaves_float:
                continue
            where_to = f" (folded into {layer.folded_into})" if layer.folded_into else ""
            raise SpecError(f"{_label(entry)}: layer {layer.name!r} has no ONNX node of its "
                            f"own{where_to}; there is no input to quantize")
        if entry.leaves_float:
            for node_name in layer.nodes:
                node = index.by_name[node_name]
                for i in range(len(node.input)):
                    p = slot_proposal(index, node, i, False, rules, rule_id,
                                      f"spec: layer {layer.name} left float", priority, tag)
                    if p is not None:
                        out.append(p)
            continue
        anchors = [index.by_name[a] for a in layer.anchors]
        weighted = [n for n in anchors if data_and_weight_slots(index, n, rules)[1]]
        if weighted:
            for node in weighted:
                data, wslots = data_and_weight_slots(index, node, rules)
                for i in data[:1]:
                    out.append(slot_proposal(index, node, i, entry.quantize_input, rules,
                                             rule_id, f"spec: {layer.name} input", priority,
                                             tag))
                for i in wslots:
                    out.append(slot_proposal(index, node, i, entry.quantize_weight, rules,
                                             rule_id, f"spec: {layer.name} weight", priority,
                                             tag))
            continue
        node = anchors[0]
        live = index.live_inputs(node)
        if entry.quantization_index is not None:
            bad = [k for k in entry.quantization_index if k >= len(live)]
            if bad:
                raise SpecError(f"{_label(entry)}: quantization_index {bad} is out of range: "
                                f"layer {layer.name!r} ({node.op_type}) has {len(live)} "
                                f"input(s), indices 0-{len(live) - 1}")
            wanted = {_onnx_slot_for_keras_index(layers, layer, k)
                      for k in entry.quantization_index}
            for i in live:
                q = entry.quantize_input and i in wanted
                out.append(slot_proposal(index, node, i, q, rules, rule_id,
                                         f"spec: {layer.name} input index "
                                         f"{live.index(i)}", priority, tag))
        else:
            slots = live if node.op_type in ("Add", "Sum", "Mul", "Concat", ops.MATMUL) \
                else live[:1]
            for i in slots:
                out.append(slot_proposal(index, node, i, entry.quantize_input, rules, rule_id,
                                         f"spec: {layer.name} input", priority, tag))
    return [p for p in out if p is not None]


def spec_proposals(spec: QuantizationSpec, layers: LayerGraph, rules: RuleSet,
                   rule_id: str = "SPEC", case_priority: int | None = None) -> list[Proposal]:
    """Proposals for all entries; contradictory entries for the same target are an error."""
    seen: dict[tuple[str, str], LayerConfig] = {}
    for entry in spec.layers:
        key = (entry.selector, entry.name)
        old = seen.get(key)
        if old is not None and old.settings() != entry.settings():
            raise SpecError(f"{_label(entry)} contradicts {_label(old)}: same "
                            f"{entry.selector} with different settings")
        seen[key] = entry
    out: list[Proposal] = []
    for entry in spec.layers:
        if case_priority is not None:
            priority = case_priority
        else:
            priority = PRIORITY_SPEC_NAME if entry.selector in ("name", "node") \
                else PRIORITY_SPEC_CLASS
        out.extend(entry_proposals(entry, layers, rules, priority, rule_id))
    return out
