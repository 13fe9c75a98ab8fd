"""qdq-onnx rules: list the rules of a rule file, or explain one rule by id."""

from __future__ import annotations

import argparse
import textwrap

from qdq_onnx.cli.options import add_rules
from qdq_onnx.errors import QdqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="list placement rules or explain one by id",
                       description="Show the rules of a rule file (default: the bundled "
                                   "tensorrt rules) with ids and reasons; give an id for the "
                                   "full rationale.")
    p.add_argument("rule_id", nargs="?", help="a rule id, e.g. TRT-R001")
    add_rules(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.pipeline import plumbing

    rules = pipeline.rules(args.rules)
    if args.rule_id:
        rule = rules.by_id(args.rule_id)
        if rule is None:
            ids = ", ".join(r.id for r in rules.all_rules())
            raise QdqError(f"no rule {args.rule_id!r} in {rules.name}; ids: {ids}")
        print(f"{rule.id}  {rule.name}")
        print(textwrap.fill(rule.reason, 88))
        if rule.why:
            print()
            print(textwrap.fill(rule.why, 88))
        return 0
    print(f"{rules.name}: {rules.description}\n")
    for name in dict.fromkeys([*rules.schemes(), *plumbing.SCHEMES]):
        print(f"{'scheme':10} {plumbing.scheme_named(name).describe()}")
    for r in rules.op_rules:
        axis = f" {r.weight_axis.describe()}" if r.weight_axis is not None else ""
        print(f"{r.id:10} {r.name:32} ops {', '.join(r.ops)}; inputs "
              f"{', '.join(map(str, r.inputs))}{axis}; {r.scheme or rules.scheme}")
    for r in rules.never:
        print(f"{r.id:10} {r.name:32} never: {len(r.ops)} op types")
    tax = rules.taxonomy
    print(f"{'taxonomy':10} {'fusible followers':32} {', '.join(sorted(tax.fusible_followers))}")
    print(f"{'taxonomy':10} {'precision neutral':32} {', '.join(sorted(tax.precision_neutral))}")
    for r in rules.patterns.values():
        state = "on" if r.enabled else "off"
        opts = r.options.get("mode")
        print(f"{r.id:10} {r.name:32} pattern {r.kind} ({state}{', ' + opts if opts else ''})")
    print(f"{'remainder':10} {'default type':32} {rules.precision.high_precision} "
          "(--high-precision)")
    for g in rules.precision.guards:
        limit = f" > {g.limit:g}" if g.limit is not None else ""
        print(f"{g.id:10} {g.name:32} guard {g.kind}{limit} ({', '.join(g.types)})")
    for f in rules.fp8:
        print(f"{f.id:10} {f.name:32} {f.describe()}")
    for c in rules.cost:
        print(f"{c.id:10} {c.name:32} cost: {', '.join(c.ops)} {describe_cost(c)}")
    a = rules.accuracy_guard
    if a is not None:
        print(f"{a.id:10} {a.name:32} accuracy guard: argmax agreement >= {a.agreement:g}, "
              f"SQNR >= {a.sqnr_db:g} dB (--accuracy-target, --no-accuracy-guard)")
    r = rules.scale_refinement
    if r is not None:
        print(f"{r.id:10} {r.name:32} scale refinement: INT8 ranges x "
              f"{'/'.join(f'{f:g}' for f in r.factors)} on the outputs, {r.sweeps} sweep(s), "
              f"<= {r.samples} samples, budget {r.max_cost:.3g} MAC (--refine-scales)")
    return 0


def describe_cost(rule) -> str:
    """The conditions of a cost rule, in words."""
    parts = [*([f"< {rule.out_channels_below} output channels"]
               if rule.out_channels_below else []),
             *([f"< {rule.in_channels_below} input channels"] if rule.in_channels_below else []),
             *([f"< {rule.macs_share_below:.2%} of the MACs"] if rule.macs_share_below else [])]
    return "with " + " and ".join(parts) + ": float remainder"
