"""qdq-onnx inspect: which layers/nodes of a Q/DQ ONNX are quantized, how, and by which rule."""

from __future__ import annotations

import argparse
import json

from qdq_onnx.cli.options import add_image_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show the quantized inputs of a Q/DQ ONNX model",
                       description="List every node input fed by DequantizeLinear: activation "
                                   "or weight, per-channel axis and scale count, the rule that "
                                   "placed it and the Keras layer it belongs to.")
    p.add_argument("model", help="a Q/DQ ONNX file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    g = p.add_argument_group("error report (needs --data)")
    g.add_argument("--data", metavar="DATA",
                   help="evaluate quantization error on this data (.npz/.npy/folder): per "
                        "tensor scale, fraction clipped and SQNR, per layer float-vs-Q/DQ "
                        "divergence")
    g.add_argument("--batch-size", type=int, default=32, metavar="N")
    g.add_argument("--max-samples", type=int, default=None, metavar="N")
    g.add_argument("--json", dest="json_out", metavar="OUT.json", help="write the report here")
    g.add_argument("--png", metavar="OUT.png", help="write the report chart here")
    add_image_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline

    model = pipeline.load(args.model).model
    if args.data:
        return _error_report(model, args)
    info = pipeline.inspect(model)
    if args.format == "json":
        print(json.dumps(info.to_dict(), indent=1))
        return 0
    rows = info.quantized_inputs
    head = ("node", "op", "in", "kind", "axis", "scales", "scheme", "rule", "layer")
    table = [head] + [(r.node, r.op_type, str(r.input), r.kind,
                       "-" if r.axis is None else str(r.axis), str(r.scales),
                       r.scheme, r.rule, r.layer or "-") for r in rows]
    widths = [min(max(len(row[i]) for row in table), 60) for i in range(len(head))]
    for row in table:
        print("  ".join(c[:60].ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"\n{info.quantized_nodes} quantized nodes, {len(rows)} quantized inputs, "
          f"{info.quantize_linear} QuantizeLinear / {info.dequantize_linear} DequantizeLinear")
    per = ", ".join(f"{n} {k}" for k, n in sorted(info.compute_ops.items()))
    print(f"float remainder {info.high_precision}; compute ops in a strongly typed build: "
          f"{per or 'none'}")
    for k in info.kept_fp32:
        print(f"fp32   {k['node']} ({k['op']})  {k['rule']}: {k['reason']}")
    for d in {d["consumer"]: d for d in info.kept_float}.values():
        print(f"float  {d['consumer']}  {d['rule']}: {d['reason']}")
    guard = info.accuracy_guard
    if guard:
        print(f"accuracy guard ({guard['rule']}, {guard['samples']} calibration samples): "
              f"moved {len(guard['moved'])} layer(s) in {guard['trials']} trial(s); target "
              f"{'met' if guard['met'] else 'NOT met'}; before {_outputs(guard['before'])}; "
              f"after {_outputs(guard['after'])}")
    refined = info.scale_refinement
    if refined:
        print(f"scale refinement ({refined['rule']}, {refined['samples']} calibration samples): "
              f"{len(refined['factors'])} of {refined['keys']} {refined['method']} range(s) "
              f"rescaled in {refined['evaluations']} evaluation(s); divergence from the float "
              f"outputs {refined['divergence']['before']:.3g} -> "
              f"{refined['divergence']['after']:.3g}")
    return 0


def _outputs(measured: dict) -> str:
    return ", ".join(f"{name} " + (f"agreement {m['agreement']:.1%}" if m["agreement"]
                                   is not None else f"SQNR {m['sqnr_db']:.1f} dB")
                     for name, m in measured.items())


def _error_report(model, args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.pipeline import plumbing

    for out in (args.json_out, args.png):
        if out:
            plumbing.check_output(out, args.model)
    config = plumbing.make_config(plumbing.ReportConfig, {
        "batch_size": args.batch_size, "max_samples": args.max_samples})
    report = pipeline.error_report(model, args.data, config)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(plumbing.render_error_report(report))
    if args.json_out:
        plumbing.write_text_atomic(args.json_out, json.dumps(report.to_dict(), indent=1) + "\n")
    if args.png:
        plumbing.write_png(plumbing.error_report_chart(report), args.png)
    return 0
