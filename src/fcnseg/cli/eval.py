"""``fcnseg eval``: score a model on COCO, VOC or a folder dataset with the published protocol.

Runs the same under ``torchrun --nproc-per-node K -m fcnseg eval ...``: the images are split over the ranks and
the confusion matrices summed; rank 0 prints and writes the results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_path
from ..faults import describe
from . import (
    CLIError,
    add_dataset_arguments,
    add_model_arguments,
    add_output_argument,
    add_progress_arguments,
    add_size_argument,
    resolve_dataset,
)

if TYPE_CHECKING:
    from ..data.detect import DetectedDataset


def split_label(split: str, ann_file: str | None) -> str:
    """The split scored, as titles and summaries name it: the annotation file when one is given, else ``split``."""
    return Path(ann_file).name if ann_file is not None else split


def _default_split(args: argparse.Namespace, detected: DetectedDataset | None) -> str:
    """``val``, unless the COCO export detected at --data-root names one other split only (CVAT's ``default``)."""
    splits = detected.splits if detected is not None else ()
    if len(splits) == 1 and splits[0] != "val":
        print(f"split: {splits[0]}, the only one {args.data_root} holds", file=sys.stderr)
        return splits[0]
    return "val"


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..data import get_dataset
    from ..distributed import init_distributed
    from ..evaluate import evaluate_dataset, format_table, summarize
    from ..models import load_weights, model_for
    from ..predict import Segmenter

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    plot = None if args.no_plot else args.plot or (Path(args.output).with_suffix(".png") if args.output else None)
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        if args.plot:
            raise CLIError("the confusion-matrix plot needs matplotlib: pip install 'fcnseg[plot]', or pass --no-plot")
        print(
            "note: matplotlib is not installed; no confusion-matrix plot (pip install 'fcnseg[plot]')", file=sys.stderr
        )
        plot = None
    if args.data_root is None and args.ann_file is None:
        raise CLIError("give the dataset with --data-root (or a COCO file with --ann-file)")
    from .. import storage

    # in a bucket: mirrored (folders) or fetched (the annotation file) into this machine's cache, read from there
    if args.data_root is not None:
        args.data_root = storage.as_local(args.data_root, folder=True)
    for name, folder in (("ann_file", False), ("images", True)):
        if getattr(args, name) is not None:
            setattr(args, name, str(storage.as_local(getattr(args, name), folder=folder)))
    detected = resolve_dataset(args)
    args.split = args.split or _default_split(args, detected)
    kwargs = {"ignore_index": args.ignore_index} if args.dataset == "folder" else {}
    try:
        dataset = get_dataset(
            args.dataset, args.data_root, args.split, ann_file=args.ann_file, images=args.images, **kwargs
        )
    except ModuleNotFoundError as e:
        raise CLIError(str(e)) from None
    split = split_label(args.split, args.ann_file)
    info, device = init_distributed(args.device)
    try:
        args.model = model_for(args.model, args.weights)  # a checkpoint's own model, unless --model names another
        weights = load_weights(args.model, args.weights)  # read once: state dict, class names, size
        names = None if weights is None else weights.categories  # None when the weights carry no class names
        seg = Segmenter(args.model, weights, device=device, size=args.size, categories=names)
        size = seg.preprocess.resize_size
        if len(seg.categories) != len(dataset.categories):
            raise CLIError(
                f"the model predicts {len(seg.categories)} classes but the {args.dataset} dataset at "
                f"{args.data_root} has {len(dataset.categories)}"
            )
        if names is None:
            seg.categories = list(dataset.categories)
        elif info.is_main and list(names) != list(dataset.categories):
            print("note: the model's class names differ from the dataset's; reporting the model's", file=sys.stderr)
        if info.is_main:
            print(seg.describe_size(), file=sys.stderr)
        run = evaluate_dataset(
            seg.model, dataset, len(seg.categories),
            resize_size=size, native=args.native, batch_size=args.batch_size, limit=args.limit,
            device=device, ignore_index=args.ignore_index, workers=args.workers, progress=not args.quiet,
        )  # fmt: skip
        if not info.is_main:
            return 0
        summary = {
            "model": args.model,
            "weights": args.weights,
            "dataset": args.dataset,
            "data_root": None if args.data_root is None else str(args.data_root),
            "ann_file": args.ann_file,
            "split": split,
            "resize_size": size,
            "resize_size_source": seg.size_reason,
            "native": args.native,
            "ignore_index": args.ignore_index,
            "batch_size": args.batch_size,
            "world_size": info.world_size,
            "device": str(device),
            **summarize(run, seg.categories),
        }
        print(f"{args.dataset} {split}: {summary['num_images']} images")
        print(format_table(summary, args.model))
        try:
            _write_results(summary, run, seg.categories, args, plot)
        except OSError as e:  # the scores are on the screen: say so rather than lose them with a traceback
            raise CLIError(describe(e, kept="the scores are printed above", todo="evaluate again")) from e
        return 0
    finally:
        if info.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _write_results(
    summary: dict[str, Any], run: Any, categories: list[str], args: argparse.Namespace, plot: Path | None
) -> None:
    """``--output``'s JSON and the confusion-matrix plot, each written atomically."""
    from ..evaluate import plot_confusion_matrix

    if args.output is not None:
        out = Path(args.output)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"results: {out}")
    if plot is not None:
        title = f"{args.model} on {args.dataset} {summary['split']}: mIoU {summary['miou']:.1f}"
        with atomic_path(plot) as tmp:
            plot_confusion_matrix(run.confusion.mat, categories, tmp, title)
        print(f"confusion matrix: {plot}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on COCO, VOC or a folder dataset (mIoU, pixel accuracy, per class)",
        description=(
            "Evaluate with the published protocol: shorter side resized to 520, or to the size a training "
            "checkpoint was validated at (image bilinear, mask nearest), one confusion matrix over the whole dataset. "
            "Works under torchrun (each image scored once)."
        ),
    )
    add_model_arguments(p)
    add_dataset_arguments(
        p, "COCO root or export folder, VOC root or folder dataset root; --data-root, --ann-file and --images may be "
        "URLs (s3://b/coco/), fetched into this machine's cache; label-studio: the JSON export file",
    )  # fmt: skip
    p.add_argument(
        "--split",
        help="split name (default: val, or the one split a COCO export holds; VOC also train_aug; CVAT: default)",
    )
    p.add_argument("--ann-file", help="COCO: an annotation file (any export) instead of --data-root and --split")
    p.add_argument(
        "--images",
        help="COCO: the folder --ann-file's image names are relative to (default: found); label-studio: the image "
        "root (default: the export's folder)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass, grouped by size (default: 1)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    add_size_argument(p)
    p.add_argument(
        "--native", action="store_true", help="score at the masks' original resolution (logits upsampled to it)"
    )
    p.add_argument("--ignore-index", type=int, default=255, help="mask value left out of the scores (default: 255)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")
    add_output_argument(p, "write the results as JSON to this file", metavar="FILE.json")
    p.add_argument("--plot", help="confusion-matrix PNG (default: next to --output, with .png)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the confusion matrix")
    add_progress_arguments(p)
    p.set_defaults(func=_run)
