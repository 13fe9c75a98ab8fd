"""What a pattern kind declares: its name, its function and the options a rule file may set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph
from qdq_onnx.placement.proposals import Proposal
from qdq_onnx.placement.rules.model import PatternRule, RuleSet

PatternFn = Callable[[GraphIndex, LayerGraph, RuleSet, PatternRule], list[Proposal]]


@dataclass(frozen=True)
class PatternKind:
    """A pattern kind: `options` maps each option to its default (its type is the default's
    type), `choices` restricts string options to a set of values."""

    name: str
    function: PatternFn
    options: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, set[str]] = field(default_factory=dict)


def layer_of(layers: LayerGraph, node: onnx.NodeProto) -> str | None:
    """The Keras layer name of a node, when the model carries a layer map."""
    la = layers.owner.get(node.name)
    return la.name if la is not None and layers.layer_map is not None else None


def produced_by_weighted(index: GraphIndex, rules: RuleSet, tensor: str) -> bool:
    node = index.producer.get(tensor)
    return node is not None and node.op_type in rules.weighted_ops()
