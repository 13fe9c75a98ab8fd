"""qdq-onnx finetune: quantization-aware fine-tuning of a Q/DQ model in onnxruntime-training."""

from __future__ import annotations

import argparse
import sys

from qdq_onnx.cli.options import add_image_options, add_output, check_in_out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a Q/DQ model with fake quantization (QAT)",
        description="Lower every Q/DQ pair to a differentiable fake-quant, train in "
                    "onnxruntime-training (weights and biases; weight scales follow the "
                    "weights; activation scales fixed unless --learn-scales), and write the "
                    "trained Q/DQ model after checking it computes what the training graph "
                    "computes. Data files hold the model inputs under their names and the "
                    "labels under the key 'labels' (or 'y').")
    p.add_argument("model", help="a Q/DQ ONNX file (qdq-onnx insert / calibrate)")
    p.add_argument("--data", required=True, metavar="TRAIN.npz",
                   help="training inputs (named like the model inputs) and 'labels': .npz, "
                        "a folder of .npy or .npz shards, or a folder of class image folders")
    add_output(p, "fine-tuned Q/DQ ONNX file")
    p.add_argument("--val", metavar="VAL.npz", help="validation data, same layout")
    p.add_argument("--validation-split", type=float, default=0.0, metavar="F",
                   help="hold out the last fraction F of the training data for validation")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                   help="train on N batches of the shuffled data per epoch (a huge data set)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 1e-5 with the cosine schedule: measured not "
                        "to hurt a converged model; QAT wants ~1%% of the original rate)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW only")
    p.add_argument("--loss", default="sparse_categorical_crossentropy",
                   choices=("sparse_categorical_crossentropy", "categorical_crossentropy",
                            "binary_crossentropy", "mse"))
    p.add_argument("--from-probabilities", action="store_true",
                   help="the model outputs probabilities (softmax/sigmoid), not logits")
    p.add_argument("--schedule", choices=("constant", "cosine", "step"), default=None,
                   help="learning-rate schedule (default cosine)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--step-size", type=int, default=1, help="epochs per decay (step)")
    p.add_argument("--gamma", type=float, default=0.1, help="decay factor (step)")
    p.add_argument("--learn-scales", action="store_true",
                   help="also train the activation scales (LSQ-style gradient)")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of val_loss")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="write a checkpoint every epoch (and on Ctrl-C) here")
    p.add_argument("--resume", metavar="DIR",
                   help="continue from the last checkpoint in DIR (and keep writing there)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda (needs the onnxruntime-training CUDA build)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    add_image_options(p)
    p.set_defaults(run=run)


def train_config(args: argparse.Namespace, model) -> object:
    """The TrainConfig of the command's options (weight bits from the model's metadata)."""
    from qdq_onnx.files.metadata import WEIGHT_BITS_KEY, get_metadata
    from qdq_onnx.finetune import TrainConfig

    chosen = {k: v for k, v in (("learning_rate", args.lr), ("schedule", args.schedule))
              if v is not None}  # unset: TrainConfig's measured defaults
    config = TrainConfig(optimizer=args.optimizer, **chosen, loss=args.loss,
                         from_logits=not args.from_probabilities,
                         weight_decay=args.weight_decay,
                         warmup_steps=args.warmup_steps, step_size=args.step_size,
                         gamma=args.gamma, learn_scales=args.learn_scales,
                         weight_bits=int(get_metadata(model, WEIGHT_BITS_KEY) or 8),
                         seed=args.seed, device=args.device)
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    from qdq_onnx import pipeline
    from qdq_onnx.data.feeds import load_labelled
    from qdq_onnx.errors import ExitCode, QdqError
    from qdq_onnx.progress import epoch_printer

    check_in_out(args.model, args.output)
    if args.resume and args.checkpoint_dir and args.resume != args.checkpoint_dir:
        raise QdqError("--resume DIR already names the checkpoint directory; drop "
                       "--checkpoint-dir or give the same folder")
    ckpt = args.resume or args.checkpoint_dir
    fit = pipeline.FitConfig(batch_size=args.batch_size, epochs=args.epochs,
                             validation_split=args.validation_split, checkpoint_dir=ckpt,
                             resume=bool(args.resume), early_stopping_patience=args.early_stopping,
                             steps_per_epoch=args.steps_per_epoch,
                             verbose=0 if args.quiet else 1)
    source = pipeline.load(args.model)
    config = train_config(args, source.model)
    x, y = load_labelled(args.data, source.model)
    val = load_labelled(args.val, source.model) if args.val else None
    tuned = pipeline.finetune(source.model, x, y, config, fit, validation_data=val,
                              on_epoch_end=None if args.quiet else epoch_printer(),
                              provenance={"source": str(args.model)})
    pipeline.save(tuned.model, args.output, check="the fine-tuned model", like=source)
    history = tuned.history
    if history.stopped == "interrupted":
        where = f"; resume with --resume {ckpt}" if ckpt else ""
        print(f"interrupted at step {history.steps}: wrote {args.output} from the current "
              f"weights{where}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    if history.kept:
        print(f"note: {history.kept} (validation data decides; without --val or "
              "--validation-split the last weights are kept)", file=sys.stderr)
    last = {k: v[-1] for k, v in history.history.items()} if history.history else {}
    text = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
    print(f"wrote {args.output}: {history.steps} steps ({history.stopped}); {text}")
    return 0
