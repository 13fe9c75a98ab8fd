"""qdq-onnx calibrate: set the activation scales of a Q/DQ ONNX model from data."""

from __future__ import annotations

import argparse

from qdq_onnx.cli import logs
from qdq_onnx.cli.options import (
    add_calibration,
    add_output,
    add_precision,
    add_workers,
    calibration_config,
    check_in_out,
    precision_config,
    print_typing,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate activation scales of a Q/DQ model",
                       description="Run the float graph behind a Q/DQ model (Q/DQ bypassed) "
                                   "on data, collect each quantized activation's statistics "
                                   "in one streamed pass, and write the model with new "
                                   "activation scales (weights keep per-channel max|w|).")
    p.add_argument("model", help="a Q/DQ ONNX file (from qdq-onnx insert)")
    add_output(p, "calibrated Q/DQ ONNX file")
    add_calibration(p, flag="--data", required=True)
    add_precision(p)
    add_workers(p, "Each rank collects the statistics of its share of the batches; maxima "
                "and histograms are reduced, so the scales equal one process's exactly; "
                "rank 0 writes.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.pipeline import plumbing

    check_in_out(args.model, args.output)
    calibration, precision = calibration_config(args), precision_config(args)
    source = pipeline.load(args.model)
    out, result = pipeline.calibrate(source.model, args.data, calibration)
    # Every rank runs each step (the range guard's pass is a collective too); rank 0 writes.
    typed = pipeline.write(out, args.output, precision, data=args.data,
                           calibration=calibration, like=source, check="the calibrated model",
                           copy=False)
    if not plumbing.world().is_root:
        return 0
    print_typing(typed)
    for line in result.notes:
        logs.note(line)
    for line in result.warnings:
        logs.warn(line)
    print(f"wrote {args.output}: activation scales calibrated with method "
          f"{calibration.resolved}")
    return 0
