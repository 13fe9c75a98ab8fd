"""Option groups shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from qdq_onnx import pipeline
from qdq_onnx.cli import logs
from qdq_onnx.data.images import PREPROCESS, ImageFolder, is_image_folder
from qdq_onnx.pipeline import plumbing


def add_output(parser: argparse.ArgumentParser, what: str = "ONNX file") -> None:
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help=f"where to write the {what} (written atomically: a temporary "
                             "file renamed into place, never a partial file)")


def add_rules(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--rules`, the same on every command that reads a rule file."""
    parser.add_argument("--rules", metavar="RULES.yaml",
                        help="rule file or bundled rule-set name (default: tensorrt; also: "
                             "nvidia-tf-toolkit)")


def add_placement(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("placement")
    g.add_argument("--mode", choices=("full", "partial"), default=None,
                   help="full: every op the rules support (spec/cases adjust); partial: only "
                        "what the spec names (default: the spec file's mode, else full)")
    g.add_argument("--spec", metavar="SPEC.yaml",
                   help="per-layer deviations: Keras layer names/classes, ONNX op types, node "
                        "names or regexes, and built-in case bundles (see docs/placement.md)")
    add_rules(g)
    g.add_argument("--case", action="append", default=[], metavar="NAME",
                   help="a built-in custom QDQ case to apply (repeatable), e.g. "
                        "ResNetV1QDQCase")
    g.add_argument("--dtype", dest="scheme", choices=tuple(plumbing.SCHEMES), default=None,
                   help="quantized type of every Q/DQ pair: int8 (the bundled rules' scheme) "
                        "or fp8 (FP8 E4M3, Hopper/Ada/Blackwell: per-tensor scales amax/448 for "
                        "activations and weights; calibrate with max or percentile)")
    g.add_argument("--keep-layout", action="store_true", default=None,
                   help="keep the layout Transposes a converter left around weighted ops "
                        "(by default they are moved to the graph's edges and cancelled, so "
                        "TensorRT can fuse each op with its activation and residual Add)")


def add_workers(parser: argparse.ArgumentParser, what: str) -> None:
    """Data-parallel ranks (dest names: workers, collective_timeout)."""
    g = parser.add_argument_group(
        "scaling out", f"{what} Needs the qdq-onnx[distributed] extra (mpi4py and MPICH). "
        "On several machines, start the same command under an MPI launcher instead, e.g. "
        "'mpiexec -hosts a,b -n 16 qdq-onnx ...' or 'srun -n 16 qdq-onnx ...': its ranks are "
        "used and --workers is ignored; every rank must see the same paths.")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run N local ranks (mpiexec -n N); default 1, in this process")
    g.add_argument("--collective-timeout", type=float, default=None, metavar="S",
                   help="a rank waiting over S seconds for the others stops the run "
                        "(default 600)")


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """How a data folder of images (one sub-folder per class) becomes model input."""
    g = parser.add_argument_group(
        "image folders", "DATA may be a folder with one sub-folder of images per class "
        "(JPEG/PNG/BMP/GIF, labels in sorted folder order, as Keras's "
        "image_dataset_from_directory); images are decoded a batch at a time and resized to "
        "the model input, in its layout (NHWC or NCHW)")
    g.add_argument("--preprocess", choices=PREPROCESS, default="none",
                   help="keras.applications preprocess_input convention: tf ([-1, 1]), torch "
                        "([0, 1] then ImageNet mean/std), caffe (BGR minus the ImageNet mean), "
                        "none (0-255, for models that rescale inside; default)")
    g.add_argument("--mean", type=_floats, metavar="R,G,B",
                   help="subtract this per-channel mean (0-255 scale) instead")
    g.add_argument("--std", type=_floats, metavar="R,G,B",
                   help="then divide by this per-channel std (0-255 scale)")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from err


def open_image_folders(args: argparse.Namespace) -> None:
    """Replace each data path of `args` that is an image folder by an ImageFolder with the
    image options, so every command reads it the same way."""
    for attr in ("data", "val", "calib"):
        value = getattr(args, attr, None)
        if isinstance(value, str) and is_image_folder(Path(value)):
            setattr(args, attr, ImageFolder(value, getattr(args, "preprocess", "none"),
                                            getattr(args, "mean", None),
                                            getattr(args, "std", None)))


def check_in_out(inp: str, out: str) -> None:
    """Refuse a bad `-o` before any work: a folder, the input file, a missing folder."""
    plumbing.check_output(out, inp)


def settings(args: argparse.Namespace, cls: type) -> dict:
    """The options of `args` named like the settings of config class `cls` (None where
    the option was not given, so the class's defaults hold)."""
    return {name: getattr(args, name) for name in plumbing.setting_names(cls)
            if hasattr(args, name)}


def default(cls: type, name: str) -> str:
    """The default of setting `name`, for help texts (one place for every default)."""
    return str(plumbing.default_of(cls, name))


def add_calibration(parser: argparse.ArgumentParser, flag: str = "--calib",
                    required: bool = False) -> None:
    """Calibration data and method options (dest names: data, method, percentile,
    batch_size, max_samples)."""
    g = parser.add_argument_group("calibration")
    g.add_argument(flag, dest="data", metavar="DATA", required=required,
                   help=".npz with arrays named after the model inputs (one unnamed array for "
                        "single-input models), a .npy, a folder of .npy or of .npz shards, "
                        "shaped exactly as the ONNX model expects (NHWC for converted Keras "
                        "models); or a folder of class image folders (see image folders)")
    cfg = pipeline.CalibrationConfig
    method = "--method" if flag == "--data" else "--calib-method"
    g.add_argument(method, dest="method",
                   choices=plumbing.METHODS, default=None,
                   help="max: largest |x| (one flag away; on a real OCR recogniser it "
                        "collapsed the model); percentile, entropy (KL) and mse pick a "
                        "clipping range from a 2048-bin histogram; auto: per tensor, the one "
                        "of those four with the best SQNR at the output of the layer that "
                        "reads it (default: mse for INT8 pairs, never far from the best "
                        "method on the measured models; max for FP8 pairs)")
    g.add_argument("--percentile", type=float, default=None,
                   help=f"percentile of |x| kept unclipped by {method} percentile (default "
                        f"{default(cfg, 'percentile')})")
    g.add_argument("--batch-size" if flag == "--data" else "--calib-batch-size",
                   dest="batch_size", type=int, default=None, metavar="N",
                   help="samples per onnxruntime run (memory does not grow with the count; "
                        f"default {default(cfg, 'batch_size')})")
    g.add_argument("--batch-mib" if flag == "--data" else "--calib-batch-mib",
                   dest="batch_mib", type=int, default=None, metavar="MIB",
                   help="fewer samples per run when one run's activations would pass "
                        "MIB (measured on one sample; the ranges do not depend on the "
                        f"batch; default {default(cfg, 'batch_mib')})")
    g.add_argument("--max-samples" if flag == "--data" else "--calib-max-samples",
                   dest="max_samples", type=int, default=None, metavar="N",
                   help="use at most N samples (default: all)")
    add_image_options(parser)
    g.add_argument("--clip-warning", type=float, default=None, metavar="F",
                   help="warn about tensors whose calibrated range clips more than this "
                        f"fraction of their calibration values (default "
                        f"{default(cfg, 'clip_warning')}); the warning names the tensor, the "
                        "estimated SQNR and a better method")
    if flag == "--calib":  # insert: ranges tuned on the outputs after calibration
        g.add_argument("--refine-scales", dest="refine_scales", choices=plumbing.REFINE_MODES,
                       default=None,
                       help="after calibration, tune each INT8 activation range on the "
                            "quantized model's outputs against the float model's, on the "
                            "calibration data (no labels; the rule file's scale_refinement): "
                            "auto refines the default method's ranges when the cost (ranges "
                            "x factors x sweeps x samples x MACs) fits the rule's budget; on "
                            "refines any --calib-method's whatever the cost; off keeps the "
                            "method's ranges (default "
                            f"{default(cfg, 'refine_scales')})")


def placement_config(args: argparse.Namespace):
    """The PlacementConfig of the placement options (files are read when it is resolved)."""
    return plumbing.make_config(pipeline.PlacementConfig,
                                {**settings(args, pipeline.PlacementConfig),
                                 "cases": tuple(args.case)})


def calibration_config(args: argparse.Namespace):
    """The CalibrationConfig of the calibration options, or None without data."""
    if not args.data:
        return None
    return plumbing.make_config(pipeline.CalibrationConfig,
                                settings(args, pipeline.CalibrationConfig))


def add_precision(parser: argparse.ArgumentParser, recorded: bool = False) -> None:
    """The float remainder's type (dest names: high_precision, keep_io_types, range_guard);
    `recorded`: the command keeps the type the input's plan records unless told."""
    g = parser.add_argument_group(
        "float remainder", "TensorRT 11 builds only strongly typed networks: every tensor not "
        "between a QuantizeLinear and its DequantizeLinear runs in the type the file gives it")
    g.add_argument("--high-precision", choices=plumbing.HIGH_PRECISIONS, default=None,
                   help="type of the float remainder: fp16 (default of the bundled rules: "
                        "FP16 engines), bf16 (FP32's range, 8 significant bits; opset 22), "
                        "fp32 (as before; TensorRT 11 then runs it in FP32). Ops the range "
                        "guard keeps FP32 are recorded in the plan with the guard's rule id"
                        + ("; default here: the type the input's plan records (else the "
                           "rules' default)" if recorded else ""))
    g.add_argument("--keep-io-types", action=argparse.BooleanOptionalAction, default=None,
                   help="keep graph inputs and outputs FP32, with a Cast at the boundary "
                        "(default: on); --no-keep-io-types types them too")
    g.add_argument("--range-guard", action=argparse.BooleanOptionalAction, default=None,
                   help="keep FP32 the ops whose measured activations or weights would "
                        "overflow or underflow in FP16, and the rule file's unsafe ops "
                        "(default: on)")


def precision_config(args: argparse.Namespace):
    """The PrecisionConfig of the float-remainder options."""
    return plumbing.make_config(pipeline.PrecisionConfig,
                                settings(args, pipeline.PrecisionConfig))


def print_typing(typed, explain: bool = False) -> None:
    """The typing's notes on stderr; with `explain`, each FP32 island and its rule."""

    for line in typed.lines():
        logs.note(line)
    if explain:
        for k in typed.kept_fp32:
            print(f"fp32   {k.node} ({k.op})  {k.rule}: {k.reason}")


def add_accuracy_guard(parser: argparse.ArgumentParser) -> None:
    """The accuracy guard's options (dest names: accuracy_target, accuracy_guard)."""
    g = parser.add_argument_group("accuracy guard (with --calib; rule file's accuracy_guard)")
    g.add_argument("--accuracy-target", type=float, default=None, metavar="A",
                   help="the argmax agreement with the float model, on the calibration "
                        "data, that the quantized model must keep (a fraction, e.g. 0.99: "
                        "top-1 of [batch, classes] outputs, per position of sequences and "
                        "maps); layers that break it move to the "
                        "float remainder (default: the rule file's, 0.99 for tensorrt)")
    g.add_argument("--no-accuracy-guard", dest="accuracy_guard", action="store_false",
                   default=True, help="quantize every layer the rules allow, whatever the "
                                      "agreement")


def guard_config(args: argparse.Namespace):
    """The AccuracyGuardConfig of the parsed arguments."""
    return pipeline.AccuracyGuardConfig(enabled=args.accuracy_guard,
                                        agreement=args.accuracy_target)
