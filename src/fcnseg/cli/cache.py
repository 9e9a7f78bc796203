"""``fcnseg cache list|clear``: what ``--fast`` keeps between runs (:mod:`fcnseg.optimize.cache`), how large, when
last used; and removing it, all of it or the least recently used until it fits a size."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["register"]


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def _root(args: argparse.Namespace) -> Path:
    from ..optimize import cache  # torch: imported by the action, not for --help

    return cache.cache_root(args.cache_dir)


def _list(args: argparse.Namespace) -> int:
    from ..optimize import cache

    root, found = _root(args), cache.entries(_root(args))
    if args.json:
        rows = [{"path": str(e.paths[0]), "what": e.what, "bytes": e.bytes, "last_used": e.used} for e in found]
        print(json.dumps({"root": str(root), "max_bytes": cache.max_bytes(), "entries": rows}, indent=2))
        return 0
    total = sum(e.bytes for e in found)
    print(f"{root}: {len(found)} entries, {_human(total)} (cap {_human(cache.max_bytes())}, FCNSEG_CACHE_MAX)")
    for e in reversed(found):  # most recently used first
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.used))
        print(f"{_human(e.bytes):>9}  {used}  {e.what:36} {e.paths[0].relative_to(root)}")
    return 0


def _clear(args: argparse.Namespace) -> int:
    from ..optimize import cache

    root = _root(args)
    limit = cache.parse_size(args.to) if args.to else 0
    removed = cache.prune(root, limit)
    print(f"removed {len(removed)} entries, {_human(sum(e.bytes for e in removed))}, from {root}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="list or clear what --fast keeps between runs",
        description="What --fast builds (compiled torch paths, OpenVINO and ONNX files, OpenVINO's compiled blobs, "
        "guard verdicts, build costs) is kept under $TORCH_HOME/fcnseg for later runs, up to FCNSEG_CACHE_MAX "
        "(default 4G; the least recently used goes first). Downloaded weights are not part of it.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="entries, most recently used first: size, when used, what")
    listing.add_argument("--json", action="store_true", help="machine-readable")
    clear = actions.add_parser("clear", help="remove everything, or with --to SIZE the least recently used")
    clear.add_argument("--to", metavar="SIZE", help="shrink to at most SIZE (e.g. 1G, 500M) instead of emptying")
    for q in (listing, clear):
        q.add_argument("--cache-dir", type=Path, help="the cache folder (default $TORCH_HOME/fcnseg)")
        q.set_defaults(func=_list if q is listing else _clear)
