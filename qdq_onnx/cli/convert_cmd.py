"""qdq-onnx convert: Keras model (.keras/.h5/SavedModel) -> float ONNX with a layer map."""

from __future__ import annotations

import argparse

from qdq_onnx.cli.options import add_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a Keras model to ONNX (needs qdq-onnx[keras])",
                       description="Convert a .keras/.h5 file or a SavedModel folder to ONNX "
                                   "with tf2onnx. BatchNorm is folded where exact, shared "
                                   "weights are un-shared, and the Keras layer map is stored "
                                   "in the file's metadata for later commands.")
    p.add_argument("model", help="a .keras or .h5 file, or a SavedModel folder")
    add_output(p)
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset to write, 13-18 (default: 13, or 17 when the model has "
                        "LayerNormalization layers, which then stay one op; per-channel Q/DQ "
                        "needs 13+)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.pipeline import plumbing

    plumbing.check_output(args.output, args.model)
    onnx_model = pipeline.convert(args.model, opset=args.opset)
    pipeline.save(onnx_model, args.output, check="the converted model")
    info = plumbing.describe(onnx_model)
    layers = f", {info['keras_layers']} Keras layers mapped" if info["keras_layers"] else ""
    print(f"wrote {args.output}: {info['nodes']} nodes, opset {info['opset']}{layers}")
    return 0
