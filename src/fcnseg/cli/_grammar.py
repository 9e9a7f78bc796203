"""One grammar for every command: the same flag for the same idea, and old spellings kept for one release.

- ``-o/--output``: where a command writes (segment: a folder; export: a file; eval: a JSON file; train: the run
  folder);
- ``--quiet``, also spelled ``--no-progress``: no progress bar;
- ``--dataset`` and ``--data-root``: a dataset's kind and folder; without ``--dataset`` the kind is detected from
  the folder (:func:`fcnseg.data.detect.detect_dataset`) and the command prints what it detected.

An old spelling (``train --output-dir``, ``data check ROOT``) still works, hidden from ``--help``, and prints a
one-line deprecation note on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data.detect import DetectedDataset

__all__ = [
    "DATASET_KINDS",
    "add_dataset_arguments",
    "add_deprecated_alias",
    "add_output_argument",
    "add_progress_arguments",
    "resolve_dataset",
]

DATASET_KINDS = ("folder", "coco", "voc", "label-studio")


def add_output_argument(p: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """``-o/--output``; ``help`` says what it is for this command (a folder, a file...)."""
    p.add_argument("-o", "--output", help=help, **kwargs)


def add_progress_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--quiet`` and ``--no-progress``, two spellings of one switch (``args.quiet``)."""
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")


def add_dataset_arguments(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, root_help: str, kinds: Sequence[str] = DATASET_KINDS
) -> None:
    """``--dataset`` (optional: detected from the folder) and ``--data-root``."""
    p.add_argument(
        "--dataset", choices=kinds,
        help="dataset format (default: detected from --data-root: classes.txt -> folder, a COCO instances file "
             "-> coco, VOC's devkit layout -> voc; the command prints what it detected)",
    )  # fmt: skip
    p.add_argument("--data-root", help=root_help)


class _Deprecated(argparse.Action):
    """An old spelling: stores into ``target`` (the new spelling's dest) and says on stderr what to use instead."""

    def __init__(self, option_strings: list[str], dest: str, *, target: str, old: str, use: str, **kwargs: Any):
        self.target, self.old, self.use = target, old, use
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None):
        given = getattr(namespace, self.target, None)
        if given is not None and given != values:
            parser.error(f"{self.old} and {self.use} name different values ({values!r}, {given!r}): give one")
        print(f"{parser.prog}: warning: {self.old} is deprecated, use {self.use} (it goes in the next release)",
              file=sys.stderr)  # fmt: skip
        setattr(namespace, self.target, values)


def add_deprecated_alias(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str, dest: str, use: str, old: str | None = None,
    **kwargs: Any,
) -> None:  # fmt: skip
    """An old spelling of the option ``use`` (whose dest is ``dest``), hidden from ``--help``: an option
    (``"--output-dir"``) or, with no ``names``, an optional positional that ``old`` describes in the note."""
    if names:
        p.add_argument(*names, dest=dest, action=_Deprecated, target=dest, old=old or names[0], use=use, **kwargs)
    else:
        p.add_argument(f"{dest}_positional", nargs="?", action=_Deprecated, target=dest, old=old, use=use, **kwargs)


def resolve_dataset(args: argparse.Namespace) -> DetectedDataset | None:
    """Fill in ``args.dataset`` when not given: ``coco`` with ``--ann-file``, else detected from ``--data-root``
    (the detection's line goes to stderr) and returned; without a root there is nothing to detect (the command
    says so)."""
    if args.dataset is not None:
        return None
    if getattr(args, "ann_file", None) is not None:
        args.dataset = "coco"
        return None
    if args.data_root is None:
        return None
    from ..data.detect import detect_dataset

    found = detect_dataset(args.data_root)
    if os.environ.get("RANK", "0") == "0":  # said once under torchrun
        print(found.describe(), file=sys.stderr)
    args.dataset = found.kind
    return found
