"""``fcnseg segment``: files, folders, globs or a list on stdin -> masks, overlays, probabilities, JSON and a summary.

Built for runs over thousands of files: a bad file is reported on one line and skipped, outputs are written
atomically (never a partial file), a rerun skips images whose outputs exist, and under ``torchrun`` each rank
takes every ``world_size``-th input while rank 0 merges the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..data.folder import IMAGE_SUFFIXES
from ..distributed import init_distributed
from ..imageio import ImageDecodeError
from ..optimize import add_speed_arguments, speed_options_from_args
from ..outputs import OUTPUT_KINDS, output_paths, write_outputs, write_summary
from ..predict import TTA_SCALES, SegmentationResult, Segmenter
from . import CLIError, add_model_arguments
from .background import in_background

__all__ = ["Input", "collect_inputs", "example_image", "register", "run"]

DEFAULT_SAVE = "mask,overlay"


@dataclass(frozen=True)
class Input:
    path: Path
    stem: Path  # output location relative to OUT_DIR, without suffix (keeps a folder input's sub-folders)


def example_image() -> Path:
    """The photo shipped with the package (see ``fcnseg/assets/README.md``)."""
    return Path(str(resources.files("fcnseg") / "assets" / "astronaut.jpg"))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def collect_inputs(specs: list[str], stdin: TextIO | None = None) -> list[Input]:
    """Expand files, folders (recursively, image suffixes only), globs and ``-`` (paths on stdin, one a line).

    A path that does not exist (or a pattern that matches nothing) is kept, so that it is reported as a failed
    input like any unreadable file.
    Inputs are de-duplicated; two inputs that would write to the same output name get ``-2``, ``-3``... added.
    """
    found: list[tuple[Path, Path]] = []
    for spec in specs:
        if spec == "-":
            lines = (stdin or sys.stdin).read().splitlines()
            found += [(Path(s.strip()), Path(Path(s.strip()).stem)) for s in lines if s.strip()]
            continue
        path = Path(spec)
        matches = [path]
        if not path.exists() and glob.has_magic(spec):  # a pattern matching nothing stays, to be reported
            matches = sorted(map(Path, glob.glob(spec, recursive=True))) or [path]
        for m in matches:
            if m.is_dir():
                found += [(f, f.relative_to(m).with_suffix("")) for f in sorted(m.rglob("*")) if _is_image(f)]
            else:
                found.append((m, Path(m.stem)))
    inputs, seen, used = [], set(), set()
    for path, stem in found:
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        unique, n = stem, 1
        while unique in used:
            n += 1
            unique = stem.with_name(f"{stem.name}-{n}")
        used.add(unique)
        inputs.append(Input(path, unique))
    return inputs


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CLIError(f"{folder}: output folder not writable ({e.strerror or e})") from None


def _parse_size(text: str) -> int | str | None:
    if text.lower() in ("none", "auto"):
        return None if text.lower() == "none" else "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {value}")
    return value


def _parse_save(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown output {bad}; choose from {','.join(OUTPUT_KINDS)}")
    return kinds


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated scales like 0.75,1,1.25, got {text!r}") from None


def _row(item: Input, status: str, rank: int, **extra: Any) -> dict[str, Any]:
    return {"input": str(item.path), "status": status, "rank": rank, **extra}


def run(args: argparse.Namespace) -> int:
    """The command's body; returns the exit code (1 if any input failed)."""
    info, device = init_distributed(args.device)
    out = Path(args.output)
    created = not out.exists()
    try:
        return _run(args, info, device)
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
        if created and out.is_dir() and not any(out.iterdir()):  # a run that wrote nothing leaves nothing behind
            with contextlib.suppress(OSError):  # another rank may have written meanwhile
                out.rmdir()


def _run(args: argparse.Namespace, info: Any, device: torch.device) -> int:
    out = Path(args.output)
    inputs = collect_inputs(args.inputs)
    if args.example:
        inputs.append(Input(example_image(), Path("astronaut")))
    if not inputs:
        raise CLIError("no inputs: give files, folders, globs, - (paths on stdin) or --example")
    _check_writable(out)
    weights = args.weights
    weights_label = "none (random init: predictions are meaningless)" if weights is None else args.weights
    kinds = args.save
    say = print if info.is_main else (lambda *a, **k: None)
    if weights is None:
        say(f"fcnseg segment: warning: --weights none: {args.model} is randomly initialised", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    todo: dict[Path, Input] = {}
    for item in inputs[info.rank :: info.world_size]:
        if not args.overwrite and all(p.is_file() for p in output_paths(out / item.stem, kinds).values()):
            rows.append(_row(item, "skipped", info.rank))
        else:
            todo[item.path] = item

    results: Iterable[tuple[Path, SegmentationResult | ImageDecodeError]] = ()
    if todo:  # a finished run, resumed, has no model to load
        segmenter = Segmenter(
            args.model,
            weights,
            device=device,
            size=args.size if args.size != "auto" else (None if args.tile else 520),
            tile=args.window if args.tile else None,
            stride=args.stride,
            tta=args.tta_scales if args.tta else False,
            batch_size=args.batch_size,
            optimize=speed_options_from_args(args),
        )
        results = segmenter.predict_paths(
            list(todo), workers=args.workers, probs="probs" in kinds, confidence="json" in kinds
        )
    meta = {"model": args.model, "weights": weights_label}
    bar = tqdm(total=len(todo), unit="img", disable=args.quiet or not sys.stderr.isatty() or not info.is_main)
    start = time.perf_counter()

    def write(found: tuple[Path, SegmentationResult | ImageDecodeError]) -> list[Path] | None:
        path, result = found
        if isinstance(result, ImageDecodeError):
            return None
        return write_outputs(result, out / todo[path].stem, kinds, {"input": str(path), **meta})

    try:
        for (path, result), written in in_background(results, write):  # writing overlaps the next batch
            item = todo[path]
            bar.update()
            if isinstance(result, ImageDecodeError):
                rows.append(_row(item, "failed", info.rank, error=str(result)))
                tqdm.write(f"fcnseg segment: error: {result}", file=sys.stderr)
                continue
            h, w = result.mask.shape
            top = next(iter(result.class_stats().items()))
            if isinstance(written, OSError):
                error = f"{path}: cannot write outputs to {out / item.stem.parent} ({written.strerror or written})"
                rows.append(_row(item, "failed", info.rank, error=error, width=w, height=h))
                tqdm.write(f"fcnseg segment: error: {error}", file=sys.stderr)
                continue
            if isinstance(written, Exception):
                raise written
            rows.append(
                _row(item, "ok", info.rank, width=w, height=h, top_class=top[0], top_share=round(top[1]["share"], 6),
                     outputs=";".join(str(p) for p in written))
            )  # fmt: skip
    except KeyboardInterrupt:
        if not info.enabled:  # keep a record of what was done; every output on disk is complete
            write_summary(rows, out / f"summary.{args.summary}")
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - start

    if info.enabled:
        gathered: list[Any] = [None] * info.world_size
        dist.all_gather_object(gathered, (rows, elapsed))
        rows = [r for part, _ in gathered for r in part]
        elapsed = max(t for _, t in gathered)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    if info.is_main:
        rows.sort(key=lambda r: r["input"])
        summary = out / f"summary.{args.summary}"
        write_summary(rows, summary)
        rate = counts["ok"] / elapsed if elapsed > 0 else 0.0
        print(
            f"fcnseg segment: {len(rows)} image{'s' * (len(rows) != 1)}: {counts['ok']} segmented, "
            f"{counts['failed']} failed, "
            f"{counts['skipped']} skipped (outputs exist) in {elapsed:.1f} s ({rate:.2f} images/s"
            f"{f' over {info.world_size} processes' if info.enabled else ''}); summary: {summary}"
        )
        if todo and (path := segmenter.speed_path()):
            print(f"--fast ran {path}")
    return 1 if counts["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images, folders or globs; write masks, overlays and a summary",
        description=(
            "Segment images and write, per input, a palette PNG mask the size of the input (class index per "
            "pixel) plus the outputs chosen with --save; a summary of the run goes to OUT_DIR/summary.csv. "
            "Launch with torchrun to shard the inputs over processes."
        ),
        epilog="outputs per input NAME (a folder input keeps its sub-folders): "
        + ", ".join(f"{kind} -> NAME{suffix}" for kind, suffix in OUTPUT_KINDS.items())
        + ". Inputs whose outputs all exist are skipped unless --overwrite; the exit code is 1 if any input failed.",
    )
    add_model_arguments(p)
    add_speed_arguments(p)
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive), globs, or - for paths on stdin"
    )
    p.add_argument(
        "-o", "--output", default="fcnseg_out", metavar="OUT_DIR", help="output folder (default: %(default)s)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="images (or tiles) per forward pass (default: 4)")
    p.add_argument(
        "--workers", type=int, default=2, help="processes decoding images (default: 2; 0 = in the main process)"
    )
    p.add_argument(
        "--size", type=_parse_size, default="auto",
        help="shorter side fed to the model: a number, 'none' for native resolution, or 'auto' (default: "
             "520 as the weights prescribe, none with --tile)",
    )  # fmt: skip
    p.add_argument(
        "--tile", action="store_true", help="sliding-window inference (for large images at native resolution)"
    )
    p.add_argument("--window", type=int, default=520, help="tile side in pixels (default: %(default)s)")
    p.add_argument("--stride", type=int, help="step between tiles (default: 3/4 of --window); overlaps are averaged")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: flips and scales, logits averaged")
    p.add_argument(
        "--tta-scales", type=_parse_scales, default=TTA_SCALES, metavar="S,S,...",
        help=f"scales for --tta (default: {','.join(map(str, TTA_SCALES))})",
    )  # fmt: skip
    p.add_argument(
        "--save", type=_parse_save, default=_parse_save(DEFAULT_SAVE), metavar="KINDS",
        help=f"comma-separated outputs from {','.join(OUTPUT_KINDS)} (default: {DEFAULT_SAVE})",
    )  # fmt: skip
    p.add_argument("--summary", choices=("csv", "jsonl"), default="csv", help="run summary format (default: csv)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--example", action="store_true", help="also segment the photo shipped with fcnseg")
    p.set_defaults(func=run)
