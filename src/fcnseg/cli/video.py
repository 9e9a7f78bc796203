"""``fcnseg segment`` for clips and live streams: per clip ``NAME_overlay.mp4``, ``NAME_mask.mkv``, ``NAME_stats.csv``.

Clips found among the inputs (by suffix, :data:`fcnseg.video.VIDEO_SUFFIXES`) come here with their names and
records, like photos; ``--source`` (a camera number, a URL or ``-`` for a stream on stdin) runs one live stream.
Ctrl-C and SIGTERM stop either: the files written so far are finalized and renamed (they play), then the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ..coco_results import CocoResults
from ..outputs import RANDOM_WEIGHTS_CAPTION, read_record, source_of, write_record
from ..video import VIDEO_OUTPUTS, Frame, VideoDecodeError, VideoReader, VideoWriter, require_av, segment_video
from . import CLIError
from ._inputs import Input

if TYPE_CHECKING:
    from ..predict import SegmentationResult, Segmenter

__all__ = ["add_video_arguments", "run_live", "segment_clips", "video_kinds"]


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video (pip install 'fcnseg[video]')")
    g.add_argument(
        "--source", metavar="SRC",
        help="segment a live stream instead of INPUTs: a camera number (0 = /dev/video0), an rtsp:// or http:// URL, "
             "or - for a stream on stdin; Ctrl-C or SIGTERM stops it and finishes the files",
    )  # fmt: skip
    g.add_argument("--max-frames", type=int, metavar="N", help="stop each video after N frames")
    g.add_argument("--duration", type=float, metavar="S", help="stop each video after S seconds of its own clock")
    g.add_argument(
        "--smooth", type=float, default=None, metavar="W",
        help="temporal smoothing: exponential average of the logits, W = the past's weight in [0, 1) (e.g. 0.6); "
             "less flicker on still scenes, a lag of about 1/(1-W) frames on moving edges (default: off)",
    )  # fmt: skip


def video_kinds(save: list[str]) -> list[str]:
    """The video outputs for ``--save``: mask and overlay as asked, mask-frames if asked, stats always."""
    frames = ["mask-frames"] if "mask-frames" in save else []
    return [k for k in ("overlay", "mask") if k in save] + ["stats"] + frames


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so that every file is finished as on Ctrl-C; ``signum`` makes the
    command exit with 128 + SIGTERM (143), as a terminated process does, not Ctrl-C's 130."""

    signum = signal.SIGTERM

    def __str__(self) -> str:
        return "terminated"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so that it finishes the files
    as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _segment_one(
    segmenter: Segmenter,
    reader: VideoReader,
    base: Path,
    kinds: list[str],
    args: argparse.Namespace,
    coco: CocoResults | None,
    on_first: Callable[[], None] | None = None,
) -> tuple[VideoWriter, VideoDecodeError | KeyboardInterrupt | None]:
    """:func:`fcnseg.video.segment_video` with a progress bar, the COCO entries and SIGTERM as Ctrl-C."""
    bar = tqdm(total=reader.video.frames or None, unit="frame", desc=reader.label, leave=False,
               disable=args.quiet or not sys.stderr.isatty())  # fmt: skip

    def written(frame: Frame, result: SegmentationResult) -> None:
        bar.update()
        if coco is not None:
            name, t = f"{base.name}#{frame.index}", round(frame.time, 6)
            coco.add(name, result, video=reader.label, frame_index=frame.index, timestamp=t)
        if frame.index == 0 and on_first is not None:
            on_first()

    try:
        with _sigterm_as_interrupt():
            return segment_video(
                segmenter, reader, base, kinds, on_frame=written, max_frames=args.max_frames,
                duration=args.duration, smooth=args.smooth, confidence=coco is not None,
                caption=RANDOM_WEIGHTS_CAPTION if args.weights is None else None,
            )  # fmt: skip
    finally:
        bar.close()


def _require_av() -> None:
    try:
        require_av()
    except ImportError as e:
        raise CLIError(str(e)) from None


def _done_before(out: Path, item: Input, claim: dict[str, Any], kinds: list[str]) -> dict[str, Any] | None:
    """The summary fields of a clip whose outputs were all written, completely, from this very file with these
    settings (``claim``: source and settings, as for photos); else None."""
    record = read_record(out, item.name)
    paths = [out / f"{item.name}{VIDEO_OUTPUTS[k]}" for k in kinds]
    if record is None or any(record.get(k) != v for k, v in claim.items()) or not record.get("complete"):
        return None
    if not all(p.exists() for p in paths):
        return None
    return {**{k: record.get(k) for k in ("width", "height")}, "outputs": ";".join(map(str, paths))}


def segment_clips(
    items: list[Input],
    segmenter: Segmenter,
    out: Path,
    args: argparse.Namespace,
    coco: CocoResults | None,
    redo: bool,
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
) -> None:
    """Segment the clips among the inputs; one summary row each ("ok", "failed" or "skipped") appended to ``rows``
    as each ends (so that a summary written on Ctrl-C has them). ``settings``: what changes a photo's pixels
    (``segment._settings``); a clip's smoothing is added to them."""
    _require_av()
    kinds = video_kinds(args.save)
    for item in items:
        row = {"input": str(item.path), "name": str(item.name), "rank": 0}
        claim = {"source": source_of(item.path), "settings": {**settings, "smooth": args.smooth}}
        done = None if redo else _done_before(out, item, claim, kinds)
        if done is not None:
            rows.append({**row, "status": "skipped", **done})
            continue
        try:
            reader = VideoReader(item.path)
        except VideoDecodeError as e:
            rows.append({**row, "status": "failed", "error": str(e)})
            print(f"fcnseg segment: error: {e}", file=sys.stderr)
            continue
        with reader:
            record = {**claim, "input": str(item.path), "kind": "video"}
            write_record(out, item.name, {**record, "complete": False})  # claims the name first
            writer, stop = _segment_one(segmenter, reader, out / item.name, kinds, args, coco)
            for note in reader.notes + writer.notes:
                print(f"fcnseg segment: {item.path}: {note}", file=sys.stderr)
        w, h = writer.size or (None, None)  # upright, as displayed
        complete = stop is None
        write_record(out, item.name, {**record, "complete": complete, "frames": writer.frames, "width": w, "height": h})
        outputs = ";".join(str(p) for p in writer.paths.values()) if writer.frames else ""
        if isinstance(stop, KeyboardInterrupt):
            rows.append({**row, "status": "failed", "error": "interrupted", "outputs": outputs})
            print(f"fcnseg segment: {item.path}: interrupted after {writer.frames} frames (files finished)")
            raise stop
        if stop is not None:
            rows.append({**row, "status": "failed", "error": str(stop), "outputs": outputs})
            print(f"fcnseg segment: error: {stop} ({writer.frames} frames written)", file=sys.stderr)
            continue
        rows.append({**row, "status": "ok", "width": w, "height": h, "outputs": outputs})
        print(f"fcnseg segment: {item.path}: {writer.frames} frames -> {out / item.name}{VIDEO_OUTPUTS['overlay']}")


def _stream_name(source: str) -> str:
    """An output name for a live source, with the UTC start time so that no earlier recording is replaced."""
    if source.isdigit():
        stem = f"camera{source}"
    elif source == "-":
        stem = "stdin"
    else:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.split("://", 1)[-1].rstrip("/")).strip("_.") or "stream"
    return f"{stem[-60:]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def run_live(args: argparse.Namespace, segmenter: Segmenter, out: Path) -> int:
    """``--source``: segment a live stream until it ends, ``--max-frames``/``--duration``, Ctrl-C or SIGTERM."""
    _require_av()
    label = "stdin" if args.source == "-" else args.source
    name = _stream_name(args.source)
    try:
        reader = VideoReader(args.source, label=label)
    except VideoDecodeError as e:
        raise CLIError(str(e)) from None
    base = out / name

    def started() -> None:
        print(
            f"fcnseg segment: recording {label} to {base}{VIDEO_OUTPUTS['overlay']} (Ctrl-C or SIGTERM stops and "
            "finishes the files)",
            file=sys.stderr,
            flush=True,
        )

    with reader:
        writer, stop = _segment_one(segmenter, reader, base, video_kinds(args.save), args, None, on_first=started)
    for note in reader.notes + writer.notes:
        print(f"fcnseg segment: {label}: {note}", file=sys.stderr)
    ended = "stopped" if isinstance(stop, KeyboardInterrupt) else "ended"
    print(f"fcnseg segment: {label}: {ended}; {writer.frames} frames written to {base}_*", flush=True)
    if isinstance(stop, VideoDecodeError):
        print(f"fcnseg segment: error: {stop}", file=sys.stderr)
        return 1
    return 0 if writer.frames else 1
