"""qdq-onnx finetune: quantization-aware fine-tuning of a Q/DQ model in onnxruntime-training."""

from __future__ import annotations

import argparse
import sys

from qdq_onnx import pipeline
from qdq_onnx.cli import logs
from qdq_onnx.cli.options import (
    add_image_options,
    add_output,
    add_precision,
    add_workers,
    check_in_out,
    default,
    precision_config,
    print_typing,
    settings,
)
from qdq_onnx.pipeline import plumbing

TRAIN, FIT = pipeline.TrainConfig, pipeline.FitConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a Q/DQ model with fake quantization (QAT)",
        description="Lower every Q/DQ pair to a differentiable fake-quant, train in "
                    "onnxruntime-training (weights and biases; weight scales follow the "
                    "weights; activation scales fixed unless --learn-scales), and write the "
                    "trained Q/DQ model after checking it computes what the training graph "
                    "computes. Data files hold the model inputs under their names and the "
                    "labels under the key 'labels' (or 'y'; 'labels/<output>' for each "
                    "output of a model with several); --distill needs no labels. Needs the "
                    "qdq-onnx[train] extra (onnxruntime-training, Python 3.10-3.12).")
    p.add_argument("model", help="a Q/DQ ONNX file (qdq-onnx insert / calibrate)")
    p.add_argument("--data", required=True, metavar="TRAIN.npz",
                   help="training inputs (named like the model inputs) and 'labels': .npz, "
                        "a folder of .npy or .npz shards, or a folder of class image folders")
    add_output(p, "fine-tuned Q/DQ ONNX file")
    add_precision(p, recorded=True)
    _loop_options(p)
    _training_options(p)
    _checkpoint_options(p)
    add_workers(p, "Synchronous data-parallel QAT: --batch-size is per rank (a step trains "
                "N x batch samples); each rank trains a disjoint shard of every epoch's "
                "shuffled order, the gradients are averaged before every step, validation "
                "is reduced, and only rank 0 writes checkpoints and the output. Resume with "
                "the same or another number of ranks.")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    add_image_options(p)
    p.set_defaults(run=run)


def _loop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val", metavar="VAL.npz", help="validation data, same layout")
    p.add_argument("--validation-split", type=float, default=None, metavar="F",
                   help="hold out the last fraction F of the training data for validation")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs to train (default {default(FIT, 'epochs')})")
    p.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                   help="train on N batches of the shuffled data per epoch (a huge data set)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"samples per step (default {default(FIT, 'batch_size')})")
    p.add_argument("--early-stopping", dest="early_stopping_patience", type=int, default=None,
                   metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of val_loss")


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lr", dest="learning_rate", type=float, default=None,
                   help=f"learning rate (default {default(TRAIN, 'learning_rate')} with the "
                        "cosine schedule: measured not to hurt a converged model; QAT wants "
                        "~1%% of the original rate)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default=None,
                   help=f"default {default(TRAIN, 'optimizer')}")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW only (default {default(TRAIN, 'weight_decay')})")
    p.add_argument("--loss", default=None, metavar="LOSS",
                   help="sparse_categorical_crossentropy, categorical_crossentropy, "
                        "binary_crossentropy or mse, for every output, or OUT=LOSS,... per "
                        f"output (default {default(TRAIN, 'loss')})")
    p.add_argument("--loss-weights", default=None, metavar="OUT=W,...",
                   help="weight of each output's loss in the total, by output name or "
                        "W1,W2,... in output order (default 1 each)")
    g = p.add_argument_group(
        "distillation", "train without labels: the float model (the Q/DQ model with its "
        "Q/DQ removed) gives the targets, computed once over the data")
    g.add_argument("--distill", action="store_true", default=None,
                   help="self-distillation from the FP32 model; the data needs no labels")
    g.add_argument("--distill-loss", default=None, metavar="LOSS",
                   help="mse (outputs) or kl (softened logits, over the last axis), for "
                        "every output or OUT=LOSS,... per output (default "
                        f"{default(TRAIN, 'distill_loss')})")
    g.add_argument("--temperature", type=float, default=None,
                   help=f"of the kl loss (default {default(TRAIN, 'temperature')})")
    p.add_argument("--from-probabilities", dest="from_logits", action="store_false",
                   default=None,
                   help="the model outputs probabilities (softmax/sigmoid), not logits")
    p.add_argument("--schedule", choices=("constant", "cosine", "step"), default=None,
                   help=f"learning-rate schedule (default {default(TRAIN, 'schedule')})")
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--step-size", type=int, default=None, help="epochs per decay (step)")
    p.add_argument("--gamma", type=float, default=None, help="decay factor (step)")
    p.add_argument("--learn-scales", action="store_true", default=None,
                   help="also train the activation scales (LSQ-style gradient)")
    p.add_argument("--seed", type=int, default=None, help="shuffling seed (default 0)")
    p.add_argument("--device", default=None,
                   help="cpu (default) or cuda[:N]: the torch backend on a CUDA build of "
                        "PyTorch (the onnxruntime backend needs onnxruntime-training's CUDA "
                        "build)")
    p.add_argument("--backend", default=None, choices=["auto", *sorted(plumbing.BACKENDS)],
                   help="training engine: onnxruntime (onnxruntime-training 1.19, Python "
                        "3.10-3.12), torch (PyTorch autograd on the same training graph, CPU "
                        "or CUDA, any Python); auto (the default) is onnxruntime where it is "
                        "installed, else torch")


def _checkpoint_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "checkpoints", "a checkpoint (weights, optimizer state, loop position) is written "
        "atomically at every epoch end, on Ctrl-C/SIGTERM, and periodically; a run killed "
        "any other way (SIGKILL, OOM, a lost node) loses at most the period")
    g.add_argument("--checkpoint-dir", metavar="DIR", help="write checkpoints here")
    g.add_argument("--resume", metavar="DIR",
                   help="continue from the newest checkpoint in DIR, exactly as the "
                        "uninterrupted run would (and keep writing there)")
    g.add_argument("--checkpoint-every-steps", type=int, default=None, metavar="N",
                   help="also write one every N optimizer steps")
    g.add_argument("--checkpoint-every-minutes", type=float, default=None, metavar="M",
                   help=f"also write one every M minutes (default "
                        f"{default(FIT, 'checkpoint_every_minutes')})")
    g.add_argument("--keep-checkpoints", type=int, default=None, metavar="K",
                   help=f"keep the newest K (default {default(FIT, 'keep_checkpoints')})")


def configs(args: argparse.Namespace):
    """(TrainConfig, FitConfig) of the command's options; each setting is spelled once,
    in the config classes."""
    from qdq_onnx.errors import QdqError

    if args.resume and args.checkpoint_dir and args.resume != args.checkpoint_dir:
        raise QdqError("--resume DIR already names the checkpoint directory; drop "
                       "--checkpoint-dir or give the same folder")
    given = settings(args, TRAIN)
    for name in ("loss", "distill_loss"):
        given[name] = _per_output(given.get(name), f"--{name.replace('_', '-')}")
    given["loss_weights"] = _per_output(given.get("loss_weights"), "--loss-weights", float)
    train = plumbing.make_config(TRAIN, given)
    fit = plumbing.make_config(FIT, {**settings(args, FIT),
                                     "checkpoint_dir": args.resume or args.checkpoint_dir,
                                     "resume": bool(args.resume) or None,
                                     "verbose": 0 if args.quiet else None})
    return train, fit


def _per_output(text: str | None, flag: str, kind: type = str):
    """'VALUE' as it is ('V1,V2,...' a list in output order for numbers), 'OUT=VALUE,...'
    a dict by output name."""
    from qdq_onnx.errors import QdqError

    if text is None or ("=" not in text and kind is str):
        return text
    if "=" not in text:
        try:
            return [kind(v) for v in text.split(",")]
        except ValueError as err:
            raise QdqError(f"{flag}: expected numbers in output order or OUT=VALUE,... got "
                           f"{text!r}") from err
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise QdqError(f"{flag}: expected OUT=VALUE,... got {text!r}")
        try:
            out[name.strip()] = kind(value.strip())
        except ValueError as err:
            raise QdqError(f"{flag}: {value!r} is not a number") from err
    return out


def run(args: argparse.Namespace) -> int:
    from qdq_onnx.data.feeds import load_labelled
    from qdq_onnx.errors import ExitCode

    check_in_out(args.model, args.output)
    train, fit = configs(args)
    precision = precision_config(args)
    plumbing.require_backend(train.backend)  # a missing engine: one line, no data read
    source = pipeline.load(args.model)
    need = not train.distill
    x, y = load_labelled(args.data, source.model, need_labels=need)
    val = load_labelled(args.val, source.model, need_labels=need) if args.val else None
    # Every rank of a data-parallel run goes through the same steps (the range guard's data
    # pass is one more collective); rank 0 alone writes and prints (`pipeline.save`, main).
    root = plumbing.world().is_root
    callbacks = [] if args.quiet else [plumbing.EpochPrinter()]
    tuned = pipeline.finetune(source.model, x, y, train, fit, validation_data=val,
                              callbacks=callbacks, provenance={"source": str(args.model)})
    # the remainder keeps the type the input's plan records unless --high-precision says
    typed = pipeline.write(tuned.model, args.output, precision, data=x, like=source,
                           check="the fine-tuned model", copy=False)
    history = tuned.history
    if not root:
        return ExitCode.INTERRUPTED if history.stopped == "interrupted" else 0
    print_typing(typed)
    if history.stopped == "interrupted":
        where = f"; resume with --resume {fit.checkpoint_dir}" if fit.checkpoint_dir else ""
        print(f"interrupted at step {history.steps}: wrote {args.output} from the current "
              f"weights{where}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    if history.kept:
        logs.note(f"{history.kept} (validation data decides; without --val or "
                  "--validation-split the last weights are kept)")
    last = {k: v[-1] for k, v in history.history.items()} if history.history else {}
    text = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
    print(f"wrote {args.output}: {history.steps} steps ({history.stopped}); {text}; "
          f"trained by {tuned.trained_by}")
    return 0
