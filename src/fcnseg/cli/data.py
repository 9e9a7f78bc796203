"""``fcnseg data check``: report what is wrong with a folder dataset or a COCO export before training on it."""

from __future__ import annotations

import argparse
import json

from . import CLIError


def _check(args: argparse.Namespace) -> int:
    from ..data import get_dataset
    from ..data.check import check_coco, check_folder, check_labelstudio

    if args.dataset == "label-studio":
        if args.root is None:
            raise CLIError("give the Label Studio JSON export (ROOT: the export file)")
        reports = [
            check_labelstudio(get_dataset("label-studio", args.root, split, images=args.images), pixels=True)
            for split in args.split or ["all"]
        ]
    elif args.dataset == "coco" or args.ann_file is not None:
        if args.root is None and args.ann_file is None:
            raise CLIError("give the export's folder (ROOT) or its annotation file (--ann-file)")
        if args.ann_file is None and not args.split:
            raise CLIError("name the export's split(s) with --split (e.g. default for CVAT, result for Label Studio)")
        reports = [
            check_coco(get_dataset("coco", args.root, split, ann_file=args.ann_file, images=args.images), pixels=True)
            for split in (args.split if args.ann_file is None else ["-"])
        ]
    else:
        if args.root is None:
            raise CLIError("give the dataset folder (ROOT)")
        reports = [check_folder(args.root, args.split or None, args.ignore_index, args.train_split)]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict(), indent=2))
    else:
        print("\n".join(r.format() for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = dsub.add_parser(
        "check",
        help="check a folder dataset or COCO export: missing files, size mismatches, unmapped mask values, classes",
        description=(
            "Folder datasets: decode every image and mask of ROOT/{split}/{images,masks}/ and report problems: "
            "missing pairs, size mismatches, mask values classes.txt does not map, classes with no pixel in the "
            "training split. COCO (--dataset coco ROOT, or --ann-file FILE): image files and their stored size "
            "against the declared one, annotation categories, polygons and RLE, annotations per category, and the "
            "share of overlapping pixels (COCO 2017: ignored; exports: the later annotation is on top). "
            "Label Studio's JSON export (--dataset label-studio EXPORT.json, splits all, train, val): the same checks "
            "on its brush and polygon regions, and what is left out (tasks without annotation, skipped ones). "
            "Exit 1 if any error."
        ),
    )
    c.add_argument("root", nargs="?", help="dataset root (folder: classes.txt and {split}/images, {split}/masks)")
    c.add_argument(
        "--dataset",
        choices=("folder", "coco", "label-studio"),
        default="folder",
        help="dataset format (default: folder)",
    )
    c.add_argument("--split", action="append", help="split to check (repeatable; default: every split present)")
    c.add_argument("--train-split", default="train", help="split every class must have pixels in (default: train)")
    c.add_argument("--ann-file", help="a COCO annotation file (implies --dataset coco)")
    c.add_argument(
        "--images",
        help="folder the COCO file's image names are relative to (default: found); Label Studio: the image root "
        "(its media folder for /data/upload/, LOCAL_FILES_DOCUMENT_ROOT for local files; default: the export's folder)",
    )
    c.add_argument("--ignore-index", type=int, default=255, help="mask value meaning 'ignore' (default: 255)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=_check)
