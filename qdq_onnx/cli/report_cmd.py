"""qdq-onnx report: one self-contained HTML file about a Q/DQ model."""

from __future__ import annotations

import argparse
from pathlib import Path

from qdq_onnx.cli.options import add_image_options, add_rules
from qdq_onnx.pipeline import plumbing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a Q/DQ model",
        description="One HTML file (images embedded, no scripts, no network) with the "
                    "placement table and the rule behind each decision, TensorRT lint, "
                    "per-layer SQNR (with --data), layer sensitivity (with --sensitivity, a "
                    "JSON from `qdq-onnx sensitivity --json`) and the accuracy/latency tables "
                    "of benchmark results (--bench-dir).")
    p.add_argument("model", help="a Q/DQ ONNX file")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html")
    p.add_argument("--data", metavar="DATA", help="data for the per-layer SQNR section")
    p.add_argument("--max-samples", type=int, default=plumbing.REPORT_SAMPLES, metavar="N",
                   help="samples of --data the error report reads (default "
                        f"{plumbing.REPORT_SAMPLES})")
    p.add_argument("--sensitivity", metavar="S.json", help="output of sensitivity --json")
    p.add_argument("--bench-dir", metavar="DIR", default=None,
                   help="folder of benchmark JSON results (e.g. bench/results)")
    add_rules(p)
    add_image_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline

    plumbing.check_output(args.output, args.model)
    model = pipeline.load(args.model).model
    sens = plumbing.read_sensitivity(args.sensitivity) if args.sensitivity else None
    config = plumbing.make_config(plumbing.ReportConfig, {"max_samples": args.max_samples})
    html_text = pipeline.report(model, Path(args.model).name, args.rules, args.data, config,
                                sens, args.bench_dir)
    plumbing.write_text_atomic(args.output, html_text)
    print(f"wrote {args.output} ({len(html_text) // 1024} KiB, self-contained)")
    return 0
