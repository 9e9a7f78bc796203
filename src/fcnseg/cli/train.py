"""``fcnseg train``: the reference recipe, fine-tuning to new classes, resume, and torchrun DDP."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

from ..train import TrainConfig, fit
from . import CLIError


def _none_or_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


class _Terminated(BaseException):
    """SIGTERM as an exception (not an ``Exception``, so nothing swallows it): a checkpoint being written is
    removed as the exception unwinds, leaving the previous one."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _train(args: argparse.Namespace) -> int:
    if not args.resume and args.data_root is None:
        raise CLIError("--data-root is required (unless resuming with --resume)")
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["progress"] = not args.no_progress
    if args.no_val:
        values["val_split"] = None
    if args.data_root is None:
        del values["data_root"]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = fit(TrainConfig(**values))
    except _Terminated:
        where = Path(args.resume).parent if args.resume else Path(args.output_dir)
        print(f"fcnseg train: terminated; continue with --resume {where / 'last.pth'}", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.print_json:
        print(json.dumps(result, indent=2))
    else:
        best = result["best_miou"]
        print(f"last checkpoint: {result['last']}")
        if best is not None:
            print(f"best checkpoint: {result['best']} (mIoU {100 * best:.1f})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = {f.name: f.default for f in fields(TrainConfig)}
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (torchvision's reference recipe; resumable; torchrun for several processes)",
        description=(
            "Train FCN with torchvision's reference recipe (SGD, poly lr, aux loss, random resize/flip/crop). "
            "Fine-tune to your classes with --num-classes or a folder dataset's classes.txt: everything but the "
            "final 1x1 convs is loaded from --weights. Run under `torchrun --nproc-per-node N` for DDP."
        ),
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["folder", "coco", "voc"], default=d["dataset"])
    g.add_argument("--data-root", help="dataset folder (folder format: classes.txt, train/ and val/)")
    g.add_argument("--train-split", default=d["train_split"])
    g.add_argument("--val-split", default=d["val_split"])
    g.add_argument("--no-val", action="store_true", help="skip validation (no best checkpoint)")
    g.add_argument("--base-size", type=int, default=d["base_size"], help="default %(default)s")
    g.add_argument("--crop-size", type=int, default=d["crop_size"], help="default %(default)s")
    g.add_argument("--workers", type=int, default=d["workers"], help="data loader processes (default %(default)s)")

    g = p.add_argument_group("model and starting weights")
    g.add_argument("--model", default=d["model"], help="fcn_resnet50 (default) or fcn_resnet101")
    g.add_argument("--weights", help="start from a whole model: weights name (DEFAULT = COCO) or checkpoint path")
    g.add_argument(
        "--weights-backbone",
        type=_none_or_str,
        default=d["weights_backbone"],
        help="ImageNet backbone weights: name, path or none (default %(default)s; ignored with --weights)",
    )
    g.add_argument("--num-classes", type=int, help="output classes (default: the dataset's classes.txt)")
    g.add_argument("--no-aux-loss", dest="aux_loss", action="store_false", help="no auxiliary head")
    g.add_argument("--freeze-backbone", action="store_true", help="train the heads only (backbone BN frozen too)")
    g.add_argument("--freeze-bn", action="store_true", help="all BatchNorm layers use fixed running statistics")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA only)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"], help="default %(default)s")
    g.add_argument("-b", "--batch-size", type=int, default=d["batch_size"], help="per process (default %(default)s)")
    g.add_argument("--accum-steps", type=int, default=d["accum_steps"], help="gradient accumulation micro-batches")
    g.add_argument("--lr", type=float, help="learning rate (default: 0.02 x global batch / 32)")
    g.add_argument("--momentum", type=float, default=d["momentum"])
    g.add_argument("--weight-decay", "--wd", type=float, default=d["weight_decay"])
    g.add_argument("--warmup-epochs", type=float, default=d["warmup_epochs"], help="linear warm-up length")
    g.add_argument("--warmup-factor", type=float, default=d["warmup_factor"])
    g.add_argument("--class-weights", help="'auto' (median frequency balancing) or a file of one weight per class")
    g.add_argument("--ignore-index", type=int, default=d["ignore_index"])
    g.add_argument(
        "--amp",
        nargs="?",
        const="auto",
        default=d["amp"],
        choices=["none", "auto", "bf16", "fp16"],
        help="mixed precision; bare --amp: fp16 (+GradScaler) on CUDA, bf16 on CPU",
    )
    g.add_argument("--channels-last", action="store_true")

    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=d["seed"])
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    g.add_argument("--device", default=d["device"], help="auto (default), cpu, cuda, cuda:1 ...")
    g.add_argument("--output-dir", default=d["output_dir"], help="checkpoints and log (default %(default)s)")
    g.add_argument("--resume", help="continue a run exactly from its last.pth; settings come from the checkpoint")
    g.add_argument("--save-every", type=int, default=d["save_every"], help="also checkpoint every N steps")
    g.add_argument("--log-every", type=int, default=d["log_every"], help="log every N steps")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", dest="print_json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_train)
