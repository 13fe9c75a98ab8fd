"""The one conflict-resolution step: per input slot the highest priority wins, equals are
settled by the last one made with a note, and the result is in graph order."""

from qdq_onnx.placement.proposals import (
    PRIORITY_CASE,
    PRIORITY_OP_RULE,
    PRIORITY_PATTERN,
    PRIORITY_SPEC_NAME,
    Proposal,
    resolve,
)


def prop(consumer, slot, quantize=True, priority=PRIORITY_OP_RULE, rule="R", kind="activation",
         axis=None, tensor=None, scale_group=None):
    return Proposal(consumer=consumer, input=slot, tensor=tensor or f"{consumer}_in{slot}",
                    quantize=quantize, kind=kind, axis=axis, rule=rule, reason=f"{rule} says",
                    priority=priority, scale_group=scale_group)


ORDER = {"a": 0, "b": 1, "c": 2}


def test_higher_priority_wins_whatever_the_order():
    for props in ([prop("a", 0, True), prop("a", 0, False, PRIORITY_SPEC_NAME, "SPEC")],
                  [prop("a", 0, False, PRIORITY_SPEC_NAME, "SPEC"), prop("a", 0, True)]):
        placements, left, notes = resolve(props, ORDER)
        assert placements == [] and [(f.consumer, f.rule) for f in left] == [("a", "SPEC")]
        assert notes == []


def test_equal_priority_last_wins_and_a_note_says_so():
    placements, left, notes = resolve([prop("b", 1, True, PRIORITY_PATTERN, "P1"),
                                       prop("b", 1, False, PRIORITY_PATTERN, "P2")], ORDER)
    assert placements == [] and left[0].rule == "P2"
    assert notes == ["b[1]: P2 overrides P1 (float)"]
    # Agreeing equals are not a conflict.
    _, _, notes = resolve([prop("b", 1, rule="X"), prop("b", 1, rule="Y")], ORDER)
    assert notes == []


def test_output_is_in_graph_order_and_keeps_every_field():
    props = [prop("c", 1, kind="weight", axis=0, rule="W"), prop("a", 0, scale_group="g"),
             prop("c", 0), prop("b", 0, priority=PRIORITY_CASE, rule="CASE:X"),
             prop("zz", 0)]  # a node missing from the order goes last
    placements, _, _ = resolve(props, ORDER)
    assert [(p.consumer, p.input) for p in placements] == [("a", 0), ("b", 0), ("c", 0),
                                                           ("c", 1), ("zz", 0)]
    weight = next(p for p in placements if p.kind == "weight")
    assert (weight.axis, weight.rule, weight.reason) == (0, "W", "W says")
    assert placements[0].scale_group == "g"
    assert all(p.scheme == "int8" for p in placements)  # schemes are assigned after


def test_priorities_are_ordered_as_documented():
    assert PRIORITY_OP_RULE < PRIORITY_PATTERN < PRIORITY_CASE < PRIORITY_SPEC_NAME
