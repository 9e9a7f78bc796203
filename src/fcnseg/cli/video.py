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

from ..coco_results import CocoResults
from ..outputs import RANDOM_WEIGHTS_CAPTION, forget_outputs, read_record, recorded_source, write_record
from ..video import (
    VIDEO_OUTPUTS,
    Frame,
    VideoDecodeError,
    VideoReader,
    VideoWriter,
    is_video,
    remove_video_outputs,
    require_av,
    segment_video,
)
from . import CLIError
from ._inputs import Input
from ._progress import FrameProgress

if TYPE_CHECKING:
    from ..predict import SegmentationResult, Segmenter

__all__ = [
    "add_video_arguments",
    "check_video_options",
    "describe_counts",
    "run_live",
    "segment_clips",
    "video_kinds",
]


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


def check_video_options(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, before any input is read or segmented."""
    if args.smooth is not None and args.tile:
        raise CLIError("--smooth works on whole frames; it cannot be combined with --tile")


def describe_counts(rows: list[dict[str, Any]], elapsed: float, processes: int = 1) -> str:
    """The run's closing count: ``6 images: 5 segmented...`` for photos alone; with clips, photos and clips counted
    apart, the clips' frames, and a rate for each (photos/s over the photos' time, frames/s over the clips')."""
    clips = [r for r in rows if is_video(r["input"])]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    done = f"{counts['ok']} segmented, {counts['failed']} failed, {counts['skipped']} skipped (done before)"
    over = f" over {processes} processes" if processes > 1 else ""
    if not clips:
        rate = counts["ok"] / elapsed if elapsed > 0 else 0.0
        return f"{len(rows)} image{'s' * (len(rows) != 1)}: {done} in {elapsed:.1f} s ({rate:.2f} images/s{over})"
    photos = len(rows) - len(clips)
    frames = sum(int(r.get("frames") or 0) for r in clips if r["status"] != "skipped")
    clip_time = sum(float(r.get("seconds") or 0.0) for r in clips)
    photos_done = sum(r["status"] == "ok" for r in rows if not is_video(r["input"]))
    rates = []
    if photos_done and elapsed > clip_time:
        rates.append(f"{photos_done / (elapsed - clip_time):.2f} photos/s")
    if frames and clip_time > 0:
        rates.append(f"{frames / clip_time:.1f} frames/s")
    what = f"{photos} photo{'s' * (photos != 1)} and {len(clips)} clip{'s' * (len(clips) != 1)} ({frames} frames)"
    return f"{what}: {done} in {elapsed:.1f} s ({', '.join(rates) or 'nothing segmented'}{over})"


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
    coco: tuple[CocoResults, str] | None,
    on_first: Callable[[], None] | None = None,
) -> tuple[VideoWriter, VideoDecodeError | KeyboardInterrupt | None]:
    """:func:`fcnseg.video.segment_video` with progress per frame, the COCO entries and SIGTERM as Ctrl-C.

    ``coco``: the results and the clip's name in them (its output name and suffix: unique in the run); each frame
    is ``NAME#INDEX``."""
    progress = FrameProgress(reader.label, reader.expected_frames, quiet=args.quiet)

    def written(frame: Frame, result: SegmentationResult) -> None:
        progress.update()
        if coco is not None:
            results, name = coco
            t = round(frame.time, 6)
            results.add(f"{name}#{frame.index}", result, video=reader.label, frame_index=frame.index, timestamp=t)
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
        progress.close()


def _require_av() -> None:
    try:
        require_av()
    except ImportError as e:
        raise CLIError(str(e)) from None


_FIELDS = ("width", "height", "frames", "duration", "top_class", "top_share")  # a clip's summary row and record


def _done_before(out: Path, item: Input, claim: dict[str, Any], kinds: list[str]) -> dict[str, Any] | None:
    """The summary fields of a clip whose outputs were all written, completely, from this very content with these
    settings (``claim``: source and settings, as for photos); else None."""
    record = read_record(out, item.name)
    paths = [out / f"{item.name}{VIDEO_OUTPUTS[k]}" for k in kinds]
    if record is None or any(record.get(k) != v for k, v in claim.items()) or not record.get("complete"):
        return None
    if not all(p.exists() for p in paths):
        return None
    return {**{k: record.get(k) for k in _FIELDS}, "outputs": ";".join(map(str, paths))}


def _clip_fields(writer: VideoWriter) -> dict[str, Any]:
    """Size (upright, as displayed), frames, seconds covered and the top class over the clip's frames."""
    w, h = writer.size or (None, None)
    top_class, top_share = writer.top_class() or (None, None)
    top_share = None if top_share is None else round(top_share, 6)
    duration = round(writer.duration, 3)
    return {"width": w, "height": h, "frames": writer.frames, "duration": duration, "top_class": top_class,
            "top_share": top_share}  # fmt: skip


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
    (``segment._settings``); a clip's smoothing is added to them.

    As for photos: the record claims the name first; an older run's outputs that this run does not rewrite are
    removed (all of them when no frame is written); a clip that no longer opens loses the outputs made from
    other content. Rows carry ``seconds`` (time spent, for the closing line; not a summary column)."""
    _require_av()
    kinds = video_kinds(args.save)
    for item in items:
        row = {"input": str(item.path), "name": str(item.name), "rank": 0}
        claim = {"source": recorded_source(out, item.name, item.path), "settings": {**settings, "smooth": args.smooth}}
        done = None if redo else _done_before(out, item, claim, kinds)
        if done is not None:
            rows.append({**row, "status": "skipped", **done})
            continue
        start = time.perf_counter()
        try:
            reader = VideoReader(item.path)
        except VideoDecodeError as e:
            forget_outputs(out, item.name, claim, remove_video_outputs)
            rows.append({**row, "status": "failed", "error": str(e)})
            print(f"fcnseg segment: error: {e}", file=sys.stderr)
            continue
        with reader:
            record = {**claim, "input": str(item.path), "kind": "video"}
            write_record(out, item.name, {**record, "complete": False})  # claims the name first
            remove_video_outputs(out / item.name, [k for k in VIDEO_OUTPUTS if k not in kinds])
            named = None if coco is None else (coco, f"{item.name}{item.path.suffix}")
            writer, stop = _segment_one(segmenter, reader, out / item.name, kinds, args, named)
            for note in reader.notes + writer.notes:
                print(f"fcnseg segment: {item.path}: {note}", file=sys.stderr)
        if not writer.frames:  # nothing new written: what is there is an older run's
            remove_video_outputs(out / item.name)
        fields = _clip_fields(writer)
        write_record(out, item.name, {**record, "complete": stop is None, **fields})
        outputs = ";".join(str(p) for p in writer.paths.values()) if writer.frames else ""
        row.update(fields, outputs=outputs, seconds=time.perf_counter() - start)
        if isinstance(stop, KeyboardInterrupt):
            rows.append({**row, "status": "failed", "error": "interrupted"})
            print(f"fcnseg segment: {item.path}: interrupted after {writer.frames} frames (files finished)")
            raise stop
        if stop is not None:
            rows.append({**row, "status": "failed", "error": str(stop)})
            print(f"fcnseg segment: error: {stop} ({writer.frames} frames written)", file=sys.stderr)
            continue
        rows.append({**row, "status": "ok"})
        top = f", mostly {fields['top_class']}" if fields["top_class"] else ""
        print(
            f"fcnseg segment: {item.path}: {writer.frames} frames ({fields['duration']:.1f} s{top}) -> "
            f"{out / item.name}{VIDEO_OUTPUTS['overlay']}"
        )


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
