"""qdq-onnx insert: plan Q/DQ placement by the rules and write the Q/DQ ONNX."""

from __future__ import annotations

import argparse

from qdq_onnx.cli import logs
from qdq_onnx.cli.options import (
    add_accuracy_guard,
    add_calibration,
    add_output,
    add_placement,
    add_precision,
    calibration_config,
    check_in_out,
    guard_config,
    placement_config,
    precision_config,
    print_typing,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("insert", help="insert Q/DQ pairs following TensorRT's placement rules",
                       description="Plan where Q/DQ goes (rules + spec + cases), then write "
                                   "QuantizeLinear/DequantizeLinear pairs in each rule's "
                                   "precision scheme (TensorRT's int8: zero point 0, "
                                   "per-tensor activations, per-channel weights). Activation "
                                   "scales come from --calib data or are reported "
                                   "placeholders. With data, the accuracy guard compares "
                                   "the quantized outputs with the float model's and moves "
                                   "the layers that break them to the float remainder; the "
                                   "cost model leaves layers INT8 buys nothing on (a narrow "
                                   "classifier head) there too. Every decision is in the "
                                   "plan (--explain).")
    p.add_argument("model", help="float ONNX model (convert Keras models first)")
    add_output(p, "Q/DQ ONNX file")
    add_placement(p)
    add_calibration(p)
    add_accuracy_guard(p)
    add_precision(p)
    p.add_argument("--plan", metavar="PLAN.json", help="also write the placement plan here")
    p.add_argument("--use-plan", metavar="PLAN.json",
                   help="apply this saved (possibly hand-edited) plan instead of planning")
    p.add_argument("--explain", action="store_true",
                   help="print every decision with its rule id and reason")
    p.add_argument("--force", action="store_true", default=None,
                   help="insert even if the model already holds Q/DQ nodes")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline

    check_in_out(args.model, args.output)
    placement, calibration = placement_config(args), calibration_config(args)
    precision = precision_config(args)
    source = pipeline.load(args.model)
    q = pipeline.insert(source.model, placement, calibration, data=args.data,
                        use_plan=args.use_plan, copy=False, guard=guard_config(args))
    typed = pipeline.write(q.qdq, args.output, precision, data=args.data,
                           calibration=calibration, like=source, check="the quantized model",
                           copy=False)
    plan = typed.plan or q.plan
    if args.plan:
        plan.save(args.plan)
    for line in q.notes + q.report.lines():
        logs.note(line)
    for line in q.calibration.notes if q.calibration else []:
        logs.note(line)
    for line in q.calibration.warnings if q.calibration else []:
        logs.warn(line)
    for line in q.guard.lines() if q.guard else []:
        (logs.note if q.guard.met else logs.warn)(line)
    print_typing(typed)
    if args.explain:
        print(render_explain(plan))
    c = plan.counts()
    print(f"wrote {args.output}: {c['activation_qdq_pairs']} activation Q/DQ pairs "
          f"({c['activation_inputs']} inputs), {c['weights']} per-channel weights "
          f"[rules: {plan.rules.get('name')}, mode: {plan.mode}]; float remainder "
          f"{plan.high_precision}, {len(plan.kept_fp32)} op(s) kept FP32 by the range guard; "
          f"{int8_share_line(typed.model, plan, args.data)}")
    return 0


def render_explain(plan) -> str:
    lines = []
    for p in plan.placements:
        axis = f" axis={p.axis}" if p.axis is not None else ""
        lines.append(f"Q/DQ   {p.consumer}[{p.input}] {p.kind}{axis} {p.scheme}  {p.rule}: "
                     f"{p.reason}")
    for f in plan.left_float:
        lines.append(f"float  {f.consumer}[{f.input}]  {f.rule}: {f.reason}")
    for k in plan.kept_fp32:
        lines.append(f"fp32   {k.node} ({k.op})  {k.rule}: {k.reason}")
    r = plan.scale_refinement
    for key, factor in (r.get("factors") or {}).items():
        lines.append(f"range  {key} x{factor:g}  {r['rule']}: brought the outputs closer to "
                     f"the float model's on {r['samples']} calibration samples (divergence "
                     f"of all rescaled ranges together {r['divergence']['before']:.3g} -> "
                     f"{r['divergence']['after']:.3g})")
    return "\n".join(lines)


def int8_share_line(model, plan, data=None) -> str:
    """The share of the weighted layers' MACs that run quantized, in words (sized at the
    data's shape when there is data: symbolic sizes count as 1 otherwise)."""
    from qdq_onnx.pipeline import plumbing

    dims = None
    if data is not None:
        dims = plumbing.data_shapes(data, model)
    schemes = "/".join(dict.fromkeys(s.split("-")[0].upper() for s in plan.schemes()))
    return (f"{plumbing.quantized_macs_share(model, dims):.1%} of the weighted layers' MACs in "
            f"{schemes or 'quantized'}")
