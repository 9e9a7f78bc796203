"""``fcnseg data check ROOT``: report what is wrong with a folder dataset before training on it."""

from __future__ import annotations

import argparse
import json


def _check(args: argparse.Namespace) -> int:
    from ..data.check import check_folder

    report = check_folder(args.root, args.split or None, args.ignore_index)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = dsub.add_parser(
        "check",
        help="check a folder dataset: missing pairs, size mismatches, bad mask values, class frequencies",
        description="Decode every image and mask of ROOT/{split}/{images,masks}/ and report problems; exit 1 if any.",
    )
    c.add_argument("root", help="dataset root holding classes.txt and {split}/images, {split}/masks")
    c.add_argument("--split", action="append", help="split to check (repeatable; default: every split present)")
    c.add_argument("--ignore-index", type=int, default=255, help="mask value meaning 'ignore' (default: 255)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=_check)
