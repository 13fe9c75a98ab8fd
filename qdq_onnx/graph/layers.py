"""The layer map (Keras layer -> ONNX nodes), stored in the ONNX file's metadata, and the
layer-level view of a graph that specs and custom cases work on.

A model converted by qdq-onnx carries `qdq_onnx.graph.layers` in `metadata_props`, so later
commands resolve Keras layer names and classes from the file alone. A plain ONNX model gets a
view in which every node is its own "layer" (name = node name, class = op type).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import onnx

from qdq_onnx.files.metadata import LAYER_MAP_KEY, get_metadata, set_metadata
from qdq_onnx.graph import ops
from qdq_onnx.graph.index import GraphIndex

# Ops that are the "main" node of a layer, in order of preference, when a layer has several.
_ANCHOR_OPS = (*sorted(ops.WEIGHTED_OPS), "Add", "Sum", "Mul", "Concat", "MaxPool",
               "AveragePool", "GlobalAveragePool", "BatchNormalization",
               "ReduceMean")


@dataclass
class LayerRecord:
    """One Keras layer: its ONNX nodes, the node it was folded into (BN into a Conv), and
    its Keras inbound layers in input order (None when the converter did not record them)."""

    name: str
    class_name: str
    nodes: list[str] = field(default_factory=list)
    folded_into: str | None = None  # a node this layer was folded into (BN into Conv)
    inputs: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "class": self.class_name, "nodes": self.nodes}
        if self.folded_into:
            d["folded_into"] = self.folded_into
        if self.inputs is not None:
            d["inputs"] = self.inputs
        return d


@dataclass
class LayerMap:
    source: str  # "keras" | "onnx"
    model_name: str
    layers: list[LayerRecord]

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "model": self.model_name,
                           "layers": [r.to_dict() for r in self.layers]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LayerMap:
        data = json.loads(text)
        return cls(source=data.get("source", "keras"), model_name=data.get("model", ""),
                   layers=[LayerRecord(name=r["name"], class_name=r["class"],
                                       nodes=list(r.get("nodes", [])),
                                       folded_into=r.get("folded_into"),
                                       inputs=r.get("inputs"))
                           for r in data.get("layers", [])])

    def rename_nodes(self, renamed: dict[str, str]) -> None:
        for rec in self.layers:
            rec.nodes = [renamed.get(n, n) for n in rec.nodes]
            if rec.folded_into:
                rec.folded_into = renamed.get(rec.folded_into, rec.folded_into)

    def drop_nodes(self, removed: dict[str, str | None]) -> None:
        """Forget removed nodes; `removed[n]` names the node `n` was folded into, if any."""
        for rec in self.layers:
            kept = [n for n in rec.nodes if n not in removed]
            if not kept and rec.nodes:
                targets = {removed[n] for n in rec.nodes if removed.get(n)}
                if len(targets) == 1:
                    rec.folded_into = targets.pop()
            rec.nodes = kept


def read_layer_map(model: onnx.ModelProto) -> LayerMap | None:
    text = get_metadata(model, LAYER_MAP_KEY)
    return None if text is None else LayerMap.from_json(text)


def write_layer_map(model: onnx.ModelProto, layer_map: LayerMap) -> None:
    set_metadata(model, LAYER_MAP_KEY, layer_map.to_json())


@dataclass
class Layer:
    """One layer of the layer view: a Keras layer, or a single ONNX node."""

    name: str
    class_name: str
    nodes: list[str]
    anchors: list[str]
    folded_into: str | None = None
    inputs: list[Layer] = field(default_factory=list, repr=False)
    outputs: list[Layer] = field(default_factory=list, repr=False)

    @property
    def anchor(self) -> str | None:
        return self.anchors[0] if self.anchors else None


class LayerGraph:
    """Layers with predecessors and successors, as custom QDQ cases expect to walk them.

    `layers` is in graph order; `layer.inputs` are the producer layers of the anchor node's
    live inputs, in input order (so index i of an Add layer is input i of its ONNX Add).
    """

    def __init__(self, model: onnx.ModelProto, index: GraphIndex | None = None) -> None:
        self.model = model  # for patterns that need shapes (attention sizes)
        self.index = index or GraphIndex(model.graph)
        self.layer_map = read_layer_map(model)
        self.from_keras = self.layer_map is not None and self.layer_map.source == "keras"
        order = {n.name: i for i, n in enumerate(self.index.nodes)}
        self.layers: list[Layer] = []
        if self.layer_map is not None:
            for rec in self.layer_map.layers:
                nodes = sorted((n for n in rec.nodes if n in order), key=order.__getitem__)
                self.layers.append(Layer(rec.name, rec.class_name, nodes,
                                         self._anchors(nodes), rec.folded_into))
            self.layers.sort(key=lambda la: order.get(la.anchor or "", len(order)))
        else:
            for node in self.index.nodes:
                if node.op_type == "Constant":
                    continue
                self.layers.append(Layer(node.name, node.op_type, [node.name], [node.name]))
        self.by_name: dict[str, Layer] = {la.name: la for la in self.layers}
        self.owner: dict[str, Layer] = {}
        for la in self.layers:
            for n in la.nodes:
                self.owner[n] = la
        self._link()

    def _anchors(self, nodes: list[str]) -> list[str]:
        op_of = {n: self.index.by_name[n].op_type for n in nodes}
        weighted = [n for n in nodes if op_of[n] in ops.WEIGHTED_OPS
                    and self._has_constant_weight(n)]
        if weighted:
            return weighted
        for op in _ANCHOR_OPS:
            hits = [n for n in nodes if op_of[n] == op]
            if hits:
                return hits[:1]
        inside = set()
        for n in nodes:
            inside.update(self.index.by_name[n].output)
        for n in nodes:  # the entry node: reads something produced outside the layer
            node = self.index.by_name[n]
            if any(t not in inside and not self.index.is_constant(t) for t in node.input if t):
                return [n]
        return nodes[:1]

    def _has_constant_weight(self, node_name: str) -> bool:
        node = self.index.by_name[node_name]
        return len(node.input) > 1 and self.index.is_constant(node.input[1])

    def _producer_layer(self, tensor: str, limit: int = 64) -> Layer | None:
        """The nearest layer upstream of `tensor`, skipping nodes no layer owns."""
        for _ in range(limit):
            node = self.index.producer.get(tensor)
            if node is None:
                return None
            layer = self.owner.get(node.name)
            if layer is not None:
                return layer
            live = self.index.live_inputs(node)
            if not live:
                return None
            tensor = node.input[live[0]]
        return None

    def _link(self) -> None:
        records = {r.name: r for r in self.layer_map.layers} if self.layer_map else {}
        self.keras_links = bool(records) and all(r.inputs is not None for r in records.values())
        if self.keras_links:
            self._link_keras(records)
            return
        for layer in self.layers:
            if layer.anchor is None:
                continue
            node = self.index.by_name[layer.anchor]
            for i in self.index.live_inputs(node):
                producer = self._producer_layer(node.input[i])
                if producer is not None and producer is not layer:
                    layer.inputs.append(producer)
                    if layer not in producer.outputs:
                        producer.outputs.append(layer)

    def _link_keras(self, records: dict[str, LayerRecord]) -> None:
        """Keras connectivity, node-less layers included (a folded BatchNorm, a Dropout):
        what the original toolkit's cases walk."""
        for layer in self.layers:
            for name in records[layer.name].inputs or []:
                producer = self.by_name.get(name)
                if producer is not None and producer is not layer:
                    layer.inputs.append(producer)
                    if layer not in producer.outputs:
                        producer.outputs.append(layer)

    def find(self, name: str) -> Layer | None:
        return self.by_name.get(name)

    def classes(self) -> set[str]:
        return {la.class_name for la in self.layers}
