"""qdq-onnx sensitivity: per-layer sensitivity and a spec that meets an accuracy target."""

from __future__ import annotations

import argparse
import json

from qdq_onnx.cli.options import add_image_options, add_rules
from qdq_onnx.pipeline import plumbing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sensitivity", help="rank layers by quantization sensitivity",
        description="For every quantized layer, evaluate the model with only that layer "
                    "quantized and with only that layer left float (accuracy when the data "
                    "has 'labels', else output SQNR against the float model), rank the "
                    "layers, and with --target-drop write a spec that leaves the fewest "
                    "layers float (greedy on the ranking) to keep the accuracy drop under X.")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--data", required=True, metavar="VAL.npz",
                   help="evaluation inputs (and optional 'labels')")
    p.add_argument("--calib", metavar="CALIB", help="calibration data (default: --data)")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="evaluate on at most N samples (default "
                        f"{plumbing.default_of(plumbing.SensitivityConfig, 'max_samples')})")
    add_rules(p)
    p.add_argument("--target-drop", type=float, metavar="X",
                   help="largest acceptable accuracy drop, in points (e.g. 0.2)")
    p.add_argument("--spec-out", metavar="SPEC.yaml", help="where --target-drop writes its spec")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="analyse weights with this many bits of range inside int8 Q/DQ "
                        "(default: the rules' scheme, 8; lower for experiments)")
    p.add_argument("--png", metavar="OUT.png")
    p.add_argument("--json", dest="json_out", metavar="OUT.json")
    add_image_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.data.feeds import load_labelled
    from qdq_onnx.errors import QdqError

    config = plumbing.make_config(plumbing.SensitivityConfig, {
        "max_samples": args.max_samples, "target_drop": args.target_drop})
    if config.target_drop is not None and not args.spec_out:
        raise QdqError("--target-drop writes a spec: give --spec-out SPEC.yaml")
    for out in (args.spec_out, args.json_out, args.png):
        if out:
            plumbing.check_output(out, args.model)
    placement = pipeline.PlacementConfig(
        rules=args.rules, weight_scheme=None if args.weight_bits is None
        else plumbing.weight_bits_scheme(args.weight_bits))
    model = pipeline.load(args.model).model
    x, labels = load_labelled(args.data, model, need_labels=False)
    report = pipeline.sensitivity(model, x, labels, placement, config,
                                  calibration_data=args.calib)
    print(render(report, min(config.max_samples, next(iter(x.values())).shape[0])))
    if report.chosen_float is not None:
        note = (f"qdq-onnx sensitivity --target-drop {args.target_drop}: leave "
                f"{len(report.chosen_float)} layer(s) float; measured accuracy "
                f"{report.chosen_metric * 100:.2f}% vs float {report.float_metric * 100:.2f}%")
        plumbing.write_text_atomic(args.spec_out, plumbing.sensitivity_spec(report.chosen_float,
                                                                            note))
        print(f"wrote {args.spec_out}: {note}")
    if args.json_out:
        plumbing.write_text_atomic(args.json_out, json.dumps(report.to_dict(), indent=1) + "\n")
    if args.png:
        plumbing.write_png(plumbing.sensitivity_chart(report), args.png)
    return 0


def render(report, n: int) -> str:
    scale = 100 if report.metric == "accuracy" else 1
    unit = "%" if report.metric == "accuracy" else " dB"
    lines = [f"float {report.float_metric * scale:.2f}{unit}, all quantized "
             f"{report.quantized_metric * scale:.2f}{unit} ({n} samples)",
             f"{'rank':4} {'layer':44} {'only this float':>16} {'only this int8':>15}"]
    for i, r in enumerate(report.layers, 1):
        lines.append(f"{i:4} {r.layer[:44]:44} {r.only_this_float * scale:15.2f}{unit} "
                     f"{r.only_this_quantized * scale:14.2f}{unit}")
    return "\n".join(lines)
