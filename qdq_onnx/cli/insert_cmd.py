"""qdq-onnx insert: plan Q/DQ placement by the rules and write the Q/DQ ONNX."""

from __future__ import annotations

import argparse
import sys

from qdq_onnx.cli.options import add_calibration, add_output, add_placement, check_in_out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("insert", help="insert Q/DQ pairs following TensorRT's placement rules",
                       description="Plan where Q/DQ goes (rules + spec + cases), then write "
                                   "QuantizeLinear/DequantizeLinear pairs: int8, zero point 0, "
                                   "per-tensor activations, per-channel weights. Activation "
                                   "scales come from --calib data (max calibration) or are "
                                   "reported placeholders.")
    p.add_argument("model", help="float ONNX model (convert Keras models first)")
    add_output(p, "Q/DQ ONNX file")
    add_placement(p)
    add_calibration(p)
    p.add_argument("--plan", metavar="PLAN.json", help="also write the placement plan here")
    p.add_argument("--use-plan", metavar="PLAN.json",
                   help="apply this saved (possibly hand-edited) plan instead of planning")
    p.add_argument("--explain", action="store_true",
                   help="print every decision with its rule id and reason")
    p.add_argument("--force", action="store_true",
                   help="insert even if the model already holds Q/DQ nodes")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx.convert.prepare import prepare_model, require_float_model
    from qdq_onnx.files.onnx_files import had_external_data, load_model, save_model_atomic
    from qdq_onnx.placement.plan import PlacementPlan
    from qdq_onnx.placement.planner import check_plan_matches, plan_placement
    from qdq_onnx.placement.rules import load_rules
    from qdq_onnx.placement.spec import load_spec_file
    from qdq_onnx.quantize.calibration import collect_amax
    from qdq_onnx.quantize.insert import insert_qdq

    check_in_out(args.model, args.output)
    source = load_model(args.model)
    require_float_model(source, force=args.force)
    spec, spec_mode, cases = (None, None, [])
    if args.spec:
        spec, spec_mode, cases = load_spec_file(args.spec)
    mode = args.mode or spec_mode or "full"
    rules = load_rules(args.rules)
    prepared, notes = prepare_model(source, copy=False)
    if args.use_plan:
        plan = PlacementPlan.load(args.use_plan)
        check_plan_matches(plan, prepared)
    else:
        plan = plan_placement(prepared, rules, mode, spec, [*cases, *args.case])
    if args.data:
        amax = collect_amax(prepared, plan, args.data, batch_size=args.batch_size,
                            max_samples=args.max_samples, method=args.method,
                            percentile=args.percentile)
        qdq, report = insert_qdq(prepared, plan, amax, f"calibrated:{args.method}",
                                 in_place=True)
    else:
        qdq, report = insert_qdq(prepared, plan, in_place=True)
    save_model_atomic(qdq, args.output, check="the quantized model",
                      external=had_external_data(args.model) or None)
    if args.plan:
        plan.save(args.plan)
    for line in notes + plan.notes + report.lines():
        print(f"note: {line}", file=sys.stderr)
    if args.explain:
        print(render_explain(plan))
    c = plan.counts()
    print(f"wrote {args.output}: {c['activation_qdq_pairs']} activation Q/DQ pairs "
          f"({c['activation_inputs']} inputs), {c['weights']} per-channel weights "
          f"[rules: {plan.rules.get('name')}, mode: {plan.mode}]")
    return 0


def render_explain(plan) -> str:
    lines = []
    for p in plan.placements:
        axis = f" axis={p.axis}" if p.axis is not None else ""
        lines.append(f"Q/DQ   {p.consumer}[{p.input}] {p.kind}{axis}  {p.rule}: {p.reason}")
    for f in plan.left_float:
        lines.append(f"float  {f.consumer}[{f.input}]  {f.rule}: {f.reason}")
    return "\n".join(lines)
