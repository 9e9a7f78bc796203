"""``fcnseg train``: the reference recipe, fine-tuning to new classes, resume, and torchrun DDP.

Data, weights and the run folder may be in a bucket (:mod:`fcnseg.storage`): ``--data-root s3://b/data`` is
mirrored to this machine's cache (each machine of a DDP job has its own copy: no shared file system), weights are
fetched once per content, and a run folder ``--output-dir s3://b/runs/a`` is worked in a local copy whose files are
uploaded, each whole, after every checkpoint save and when the run ends or stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Any

from .. import storage
from .._stamp import file_stamp
from ..faults import describe, io_fault
from ..runlock import FolderBusyError
from ..train.config import TrainConfig
from ..train.runs import RUN_FILES
from . import (
    CLIError,
    add_dataset_arguments,
    add_deprecated_alias,
    add_output_argument,
    add_progress_arguments,
    resolve_dataset,
)
from ._extras import require


class _Terminated(BaseException):
    """SIGTERM outside the training loop (setting up, finishing) as an exception, like Ctrl-C's KeyboardInterrupt;
    inside it, the loop saves the current step and raises TrainingStopped instead."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _given(args: argparse.Namespace) -> dict[str, object]:
    """The TrainConfig fields set on the command line. Every option defaults to None, so "given" is exact: with
    --resume a flag repeated at its default value still counts (and must equal the checkpoint's)."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.no_val:
        given["val_split"] = None
    if args.quiet:
        given["progress"] = False
    given.pop("resume", None)
    return given


@contextlib.contextmanager
def _folder_lock(out: storage.AnyPath) -> Iterator[None]:
    """One run at a time in ``out`` (a folder, or a bucket prefix: a lock object): rank 0 holds its lock for the
    job (torchrun stops the other ranks if it refuses). A folder this created for the lock alone goes again if the
    run wrote nothing."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    created = not storage.is_remote(out) and not out.exists()
    lock = storage.run_lock(out, "train")
    try:
        lock.acquire()
    except FolderBusyError as e:
        raise CLIError(str(e)) from None
    try:
        yield
    finally:
        lock.release()
        if created:
            with contextlib.suppress(OSError):  # not empty: the run's files
                out.rmdir()


def _checkpoint_place(path: Path) -> str | None:
    """Where in its run a training checkpoint was saved (``epoch 3, step 7``), read without loading its tensors;
    None if it cannot be read."""
    import torch

    from ..train.checkpoint import checkpoint_place

    try:
        return checkpoint_place(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # any reason it does not load means it is not a checkpoint to resume from
        return None


def _after_fault(out: Path) -> dict[str, str]:
    """What survived an I/O fault in the run folder ``out``, and how to go on from it."""
    last = out / "last.pth"
    place = _checkpoint_place(last) if last.is_file() else None
    if place is not None:
        return {"kept": f"{last.name} from {place} is intact", "todo": f"continue with --resume {last}"}
    if any((out / name).exists() for name in RUN_FILES):
        return {"kept": "no checkpoint was saved yet", "todo": "start over in the same folder with --exist-ok"}
    return {"kept": "nothing was written", "todo": "run again"}


def _published(run: Any, publish: Any) -> dict[str, Any]:
    """``run()``, then the run folder's last files uploaded; also when it stops or fails (what it saved is kept)."""
    if publish is None:
        return run()
    try:
        result = run()
    except BaseException:
        with contextlib.suppress(Exception):  # the run's own failure is the one to report
            publish()
        raise
    publish()
    return result


def _run_in_bucket(args: argparse.Namespace) -> tuple[storage.AnyPath, Path] | None:
    """For a run folder in a bucket (``--output-dir URL``, or ``--resume URL`` without it): its URL and the local
    copy the run works in (``--output-dir`` and ``--resume`` then point there); None for a folder on disk."""
    resume = args.resume if args.resume and storage.is_remote(args.resume) else None
    if args.output_dir is not None and storage.is_remote(args.output_dir):
        remote = storage.as_path(args.output_dir)
    elif resume is not None and args.output_dir is None:
        remote = storage.as_path(resume).parent
    else:
        if resume is not None:  # a bucket's run continued in a folder on disk
            args.resume = str(storage.as_local(resume))
        return None
    local = storage.local_mirror(remote, storage.cache_root() / "runs", allow_empty=True)
    args.output_dir = str(local)
    if resume is not None:
        args.resume = str(local / storage.as_path(resume).name)
    return remote, local


def _publisher(bucket: tuple[storage.AnyPath, Path] | None) -> Any:
    """Rank 0's upload of the run folder's new and changed files to the bucket (None for a folder on disk)."""
    if bucket is None or os.environ.get("RANK", "0") != "0":
        return None
    remote, local = bucket
    sent = {str(p.relative_to(local)): stamp for p in local.rglob("*") if (stamp := file_stamp(p)) is not None}
    return partial(storage.publish_folder, local, remote, sent)


def _pulled(args: argparse.Namespace, given: dict[str, object]) -> TrainConfig:
    """``--label-studio URL --project ID``: the run's config, once the project is pulled into ``OUTPUT_DIR/data/``
    (under the folder's lock, and only into a folder free for this run) to train on as ``--dataset label-studio``."""
    from ..labelstudio.pull import LabelStudioError, connection, pull_project
    from ..train.runs import check_output_dir

    config = TrainConfig(**given)
    out = Path(config.output_dir)
    check_output_dir(out, config)  # never pull into another run's folder
    url, key = connection(args.label_studio)
    try:
        result = pull_project(url, key, args.project, out / "data")
    except LabelStudioError as e:
        raise CLIError(str(e)) from None
    if result.not_fetched:
        print(f"fcnseg train: note: {len(result.not_fetched)} images are not on {url} and were not fetched "
              f"(e.g. {result.not_fetched[0]})", file=sys.stderr)  # fmt: skip
    print(f"pulled project {args.project}: {result.tasks} tasks, {result.fetched} images fetched", file=sys.stderr)
    return replace(config, dataset="label-studio", data_root=str(result.export))


def _check_pull_flags(args: argparse.Namespace, given: dict[str, object]) -> None:
    if args.resume:
        raise CLIError("--label-studio starts a run; a resumed run trains on the data it pulled when it started")
    if args.project is None:
        raise CLIError("--label-studio needs the project's id (--project ID, the number in the project's URL)")
    if args.data_root is not None or given.get("dataset") not in (None, "label-studio"):
        raise CLIError("--label-studio pulls the data: drop --data-root and --dataset")


def _train(args: argparse.Namespace) -> int:
    from ..train import TrainingStopped, fit, resume

    if args.data_root is not None:
        args.data_root = str(storage.as_local(args.data_root, folder=True))
    for name in ("weights", "weights_backbone", "class_weights"):
        if getattr(args, name) is not None and storage.is_remote(getattr(args, name)):
            setattr(args, name, str(storage.as_local(getattr(args, name))))
    bucket = _run_in_bucket(args)
    publish = _publisher(bucket)

    def public(text: str) -> str:  # the run folder's files named where they are kept: in the bucket
        return text if bucket is None else text.replace(str(bucket[1]), str(bucket[0]))

    given = _given(args)
    if given.get("weights") and not args.resume:  # fine-tuning: the model the checkpoint records, unless --model
        from ..models import model_for

        given["model"] = model_for(given.get("model"), given["weights"])
    if args.label_studio is not None:
        _check_pull_flags(args, given)
        where = Path(TrainConfig(**given).output_dir)
        run = lambda: fit(_pulled(args, given), after_save=publish)  # noqa: E731
    elif args.resume:
        run = partial(resume, args.resume, after_save=publish, **given)
        where = Path(args.output_dir or Path(args.resume).parent)
    elif args.data_root is None:
        raise CLIError("--data-root is required (unless resuming with --resume)")
    else:
        resolve_dataset(args)
        if args.dataset == "coco":
            require("coco", "COCO annotations", ("pycocotools",))
        config = TrainConfig(**{**given, "dataset": args.dataset})
        run, where = partial(fit, config, after_save=publish), Path(config.output_dir)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with _folder_lock(where if bucket is None else bucket[0]):
            result = _published(run, publish)
    except FileExistsError as e:  # the output folder holds another run
        raise CLIError(public(str(e))) from None
    except TrainingStopped as e:  # SIGINT or SIGTERM while training: the current step is saved
        print(f"fcnseg train: {public(str(e))}", file=sys.stderr)
        return 128 + e.signum
    except _Terminated:
        print("fcnseg train: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:
        if (fault := io_fault(e)) is None:
            raise
        raise CLIError(public(describe(fault, **_after_fault(where)))) from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    result = {k: public(v) if isinstance(v, str) else v for k, v in result.items()}
    if args.print_json:
        print(json.dumps(result, indent=2))
    else:
        best = result["best_miou"]
        print(f"last checkpoint: {result['last']}")
        if best is not None:
            print(f"best checkpoint: {result['best']} (mIoU {100 * best:.1f})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = {f.name: f.default for f in fields(TrainConfig)}  # shown in the help; the options themselves default to None
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (torchvision's reference recipe; resumable; torchrun for several processes)",
        description=(
            "Train FCN with torchvision's reference recipe (SGD, poly lr, aux loss, random resize/flip/crop). "
            "Fine-tune to your classes with --num-classes or a folder dataset's classes.txt: everything but the "
            "final 1x1 convs is loaded from --weights. Run under `torchrun --nproc-per-node N` for DDP. "
            "A run folder holds one run; --resume continues a run with its own settings, in its own folder."
        ),
    )
    g = p.add_argument_group("data")
    add_dataset_arguments(
        g, "dataset folder (folder format: classes.txt, train/ and val/), or a bucket prefix (s3://b/data): "
        "mirrored to this machine's cache, so DDP needs no shared file system; label-studio: the JSON export file "
        "(splits train and val: one task in five by id is val)",
    )  # fmt: skip
    g.add_argument(
        "--label-studio",
        metavar="URL",
        help="pull a Label Studio project (with --project; API key in $LABEL_STUDIO_API_KEY) into "
        "OUTPUT_DIR/data/ and train on it",
    )
    g.add_argument("--project", type=int, help="the Label Studio project's id (with --label-studio)")
    g.add_argument("--train-split", help=f"default {d['train_split']}")
    g.add_argument("--val-split", help=f"default {d['val_split']}")
    g.add_argument("--no-val", action="store_true", help="skip validation (no best checkpoint)")
    g.add_argument("--base-size", type=int, help=f"default {d['base_size']}")
    g.add_argument("--crop-size", type=int, help=f"default {d['crop_size']}")
    g.add_argument("--workers", type=int, help=f"data loader processes (default {d['workers']})")

    g = p.add_argument_group("model and starting weights")
    g.add_argument("--model", help=f"{d['model']} (default) or fcn_resnet101")
    g.add_argument("--weights", help="start from a whole model: weights name (DEFAULT = COCO) or checkpoint path")
    g.add_argument(
        "--weights-backbone",
        help=f"ImageNet backbone weights: name, path or none (default {d['weights_backbone']}; ignored with --weights)",
    )
    g.add_argument("--num-classes", type=int, help="output classes (default: the dataset's classes.txt)")
    g.add_argument("--no-aux-loss", dest="aux_loss", action="store_false", default=None, help="no auxiliary head")
    g.add_argument(
        "--freeze-backbone", action="store_true", default=None, help="train the heads only (backbone BN frozen too)"
    )
    g.add_argument(
        "--freeze-bn", action="store_true", default=None, help="all BatchNorm layers use fixed running statistics"
    )
    g.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm across processes (CUDA only)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"default {d['epochs']}")
    g.add_argument("-b", "--batch-size", type=int, help=f"per process (default {d['batch_size']})")
    g.add_argument("--accum-steps", type=int, help=f"gradient accumulation micro-batches (default {d['accum_steps']})")
    g.add_argument("--lr", type=float, help="learning rate (default: 0.02 x global batch / 32)")
    g.add_argument("--momentum", type=float, help=f"default {d['momentum']}")
    g.add_argument("--weight-decay", "--wd", type=float, help=f"default {d['weight_decay']}")
    g.add_argument("--warmup-epochs", type=float, help=f"linear warm-up length (default {d['warmup_epochs']})")
    g.add_argument("--warmup-factor", type=float, help=f"default {d['warmup_factor']}")
    g.add_argument("--class-weights", help="'auto' (median frequency balancing) or a file of one weight per class")
    g.add_argument("--ignore-index", type=int, help=f"mask label to ignore; not a class (default {d['ignore_index']})")
    g.add_argument(
        "--amp",
        nargs="?",
        const="auto",
        choices=["none", "auto", "bf16", "fp16"],
        help=f"mixed precision; bare --amp: fp16 (+GradScaler) on CUDA, bf16 on CPU (default {d['amp']})",
    )
    g.add_argument("--channels-last", action="store_true", default=None)

    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help=f"default {d['seed']}")
    g.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms only")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    add_output_argument(
        g,
        f"run folder: checkpoints and log; one run per folder (default {d['output_dir']}; with --resume the "
        "checkpoint's); a bucket prefix (s3://b/runs/a) is worked in a local copy, its files uploaded whole after "
        "every save",
        dest="output_dir",
        metavar="RUN_DIR",
    )
    add_deprecated_alias(g, "--output-dir", dest="output_dir", use="-o/--output")
    g.add_argument(
        "--exist-ok",
        action="store_true",
        default=None,
        help="start in an output folder that holds another run, replacing its checkpoints, log and class weights",
    )
    g.add_argument(
        "--resume",
        help="continue a run exactly from its last.pth, in its folder; flags that change the training are refused",
    )
    g.add_argument("--save-every", type=int, help="also checkpoint every N steps")
    g.add_argument("--log-every", type=int, help=f"log every N steps (default {d['log_every']})")
    add_progress_arguments(g)
    g.add_argument("--json", dest="print_json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_train)
