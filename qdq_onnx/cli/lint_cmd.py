"""qdq-onnx lint: predict TensorRT INT8 coverage and broken fusions of any Q/DQ ONNX."""

from __future__ import annotations

import argparse
import json

from qdq_onnx.cli.options import add_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lint", help="check a Q/DQ model against TensorRT's INT8 and fusion rules",
        description="Static check of any Q/DQ ONNX (qdq-onnx's, NVIDIA Model Optimizer's, "
                    "onnxruntime's): for every weighted op, whether TensorRT can run it in "
                    "INT8, and which fusions the placement breaks (residual Add, Q/DQ on "
                    "weighted outputs, re-quantization) plus hard errors (zero points, uint8, "
                    "per-channel activations, quantized bias, QLinear ops, axis/opset). The "
                    "checks live in the rule file's `lint:` section. Exit 1 when errors are "
                    "found (2: the file cannot be read, 3: a bug).")
    p.add_argument("model", help="a Q/DQ ONNX file")
    add_rules(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--typing", choices=("strong", "weak"), default="strong",
                   help="strong (default): the build is strongly typed, as every TensorRT 11 "
                        "build is: report each compute op that runs in FP32 (warning; ops the "
                        "range guard kept FP32 are listed with their rule instead), Q/DQ "
                        "whose types do not match their neighbours (error) and Cast chains; "
                        "weak: TensorRT 10 and older with --fp16/--int8, no type checks")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.errors import ExitCode

    report = pipeline.lint(pipeline.load(args.model).model, args.rules, args.typing)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(render(report))
    return ExitCode.FINDINGS if report.errors else ExitCode.OK


def render(report) -> str:
    lines = [f"{'weighted layer':50} {'op':13} {'runs':9} {'data':5} {'weight':6} axis"]
    for r in report.layers:
        axis = "-" if r.axis is None else f"{r.axis}" + (
            "" if r.expected_axis in (None, r.axis) else f" (want {r.expected_axis})")
        lines.append(f"{r.node[:50]:50} {r.op_type:13} {r.scheme or 'FLOAT':9} "
                     f"{'q' if r.data_quantized else '-':5} "
                     f"{'q' if r.weight_quantized else '-':6} {axis}")
    if report.kept_fp32:
        lines.append("")
        lines.extend(f"fp32    {rule} {node} ({op}): {reason}"
                     for node, op, rule, reason in report.kept_fp32)
    if report.findings:
        lines.append("")
        for f in report.findings:
            lines.append(f"{f.severity:7} {f.id} {f.name}: {f.node}: {f.message}")
    lines.append("")
    lines.append(report.summary())
    return "\n".join(lines)
