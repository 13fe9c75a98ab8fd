"""Proposals: what each rule, case or spec entry wants for one input slot, and the one
explicit step that resolves conflicts between them into a placement plan."""

from __future__ import annotations

from dataclasses import dataclass

from qdq_onnx.placement.plan import FloatDecision, Placement

# Who wins when two sources disagree about one input slot (higher wins).
PRIORITY_OP_RULE = 0
PRIORITY_PATTERN = 1
PRIORITY_CASE = 2
PRIORITY_SPEC_CLASS = 3  # spec entries selecting by class, op type or regex
PRIORITY_SPEC_NAME = 4  # spec entries naming one layer or node: the user's word is final


@dataclass(frozen=True)
class Proposal:
    consumer: str
    input: int
    tensor: str
    quantize: bool
    kind: str  # "activation" | "weight"
    axis: int | None
    rule: str
    reason: str
    priority: int
    layer: str | None = None
    scale_group: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.consumer, self.input)


def resolve(proposals: list[Proposal], node_order: dict[str, int]
            ) -> tuple[list[Placement], list[FloatDecision], list[str]]:
    """Pick one proposal per input slot: highest priority wins; among equals, the last one
    made wins and the disagreement is reported in the notes."""
    chosen: dict[tuple[str, int], Proposal] = {}
    notes: list[str] = []
    for prop in proposals:
        old = chosen.get(prop.key)
        if old is None or prop.priority > old.priority:
            chosen[prop.key] = prop
        elif prop.priority == old.priority:
            if old.quantize != prop.quantize:
                notes.append(f"{prop.consumer}[{prop.input}]: {prop.rule} overrides {old.rule} "
                             f"({'quantize' if prop.quantize else 'float'})")
            chosen[prop.key] = prop
    ordered = sorted(chosen.values(), key=lambda p: (node_order.get(p.consumer, 1 << 30),
                                                     p.input))
    placements = [Placement(tensor=p.tensor, consumer=p.consumer, input=p.input, kind=p.kind,
                            axis=p.axis, rule=p.rule, reason=p.reason, layer=p.layer,
                            scale_group=p.scale_group)
                  for p in ordered if p.quantize]
    left = [FloatDecision(consumer=p.consumer, input=p.input, tensor=p.tensor, rule=p.rule,
                          reason=p.reason, layer=p.layer)
            for p in ordered if not p.quantize]
    return placements, left, notes
