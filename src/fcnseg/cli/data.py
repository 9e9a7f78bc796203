"""``fcnseg data check``: report what is wrong with a folder dataset or a COCO export before training on it."""

from __future__ import annotations

import argparse
import json

from . import CLIError, add_dataset_arguments, add_deprecated_alias, resolve_dataset


def _check(args: argparse.Namespace) -> int:
    from ..data import get_dataset
    from ..data.check import check_coco, check_folder, check_labelstudio
    from ..data.detect import coco_annotation_files
    from ._extras import require

    if args.data_root is None and args.ann_file is None:
        raise CLIError("give the dataset folder with --data-root (or a COCO file with --ann-file)")
    resolve_dataset(args)
    if args.dataset == "voc":
        raise CLIError(f"{args.data_root} is a VOC devkit; data check reads folder datasets and COCO files")
    if args.dataset == "label-studio":
        reports = [
            check_labelstudio(get_dataset("label-studio", args.data_root, split, images=args.images), pixels=True)
            for split in args.split or ["all"]
        ]
    elif args.dataset == "coco":
        require("coco", "COCO annotations", ("pycocotools",))
        splits = args.split
        if args.ann_file is None and not splits:  # every split the export's annotation files name
            splits = [s for s, _ in coco_annotation_files(args.data_root)]
        if args.ann_file is None and not splits:
            raise CLIError("name the export's split(s) with --split (e.g. default for CVAT, result for Label Studio)")
        reports = [
            check_coco(get_dataset("coco", args.data_root, split, ann_file=args.ann_file, images=args.images),
                       pixels=True)
            for split in (splits if args.ann_file is None else ["-"])
        ]  # fmt: skip
    else:
        reports = [check_folder(args.data_root, args.split or None, args.ignore_index, args.train_split)]
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
            "Folder datasets: decode every image and mask of DATA_ROOT/{split}/{images,masks}/ and report problems: "
            "missing pairs, size mismatches, mask values classes.txt does not map, classes with no pixel in the "
            "training split. COCO (a COCO instances file in DATA_ROOT, or --ann-file FILE): image files and their "
            "stored size against the declared one, annotation categories, polygons and RLE, annotations per "
            "category, and the share of overlapping pixels (COCO 2017: ignored; exports: the later annotation is on "
            "top); every split whose annotation file DATA_ROOT holds unless --split names some. "
            "Label Studio's JSON export (--dataset label-studio --data-root EXPORT.json, splits all, train, val): the "
            "same checks on its brush and polygon regions, and what is left out (tasks without annotation, skipped "
            "ones). Exit 1 if any error."
        ),
    )
    add_dataset_arguments(
        c, "dataset root (folder: classes.txt and {split}/images, {split}/masks; COCO: annotations/*.json); Label "
        "Studio: the JSON export file",
        kinds=("folder", "coco", "label-studio"),
    )  # fmt: skip
    add_deprecated_alias(c, dest="data_root", use="--data-root", old="the dataset root as a positional argument")
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
