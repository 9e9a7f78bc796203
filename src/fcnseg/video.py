"""Video in, one label map per frame out, through the photos' own pipeline; outputs that survive an interruption.

The data path of a clip or a live stream::

    container --PyAV demux + decode (a reader thread)--> Frame: upright RGB uint8 (display matrix applied,
    10-bit converted), its timestamp, the audio packets that came before it
    --Segmenter.preprocess, batch_size frames a batch--> Segmenter.segment_tensors (the photos' forward, TTA,
    tiles, labels) [--TemporalSmoothing of the low-resolution logits--] --> SegmentationResult per frame
    --VideoWriter (a writer thread)--> NAME_overlay.mp4, NAME_mask.mkv, NAME_stats.csv [, NAME_frames/*.png]

Decoding, the model and encoding overlap (FFmpeg's decoder and x264 release the GIL), and at most a few batches
of frames are held at a time, so a two-hour clip needs the memory of a few frames.

Outputs (the file formats, and why):

- ``NAME_overlay.mp4``: H.264 (x264, yuv420p, which every player decodes), the source's own timestamps (variable
  frame rate kept), each audio stream copied packet by packet (never re-encoded). yuv420p needs even sizes: an odd
  width or height gets one column or row repeated at the right or bottom edge. The MP4 is a plain one, finalized
  when the run ends, Ctrl-C and SIGTERM included. A fragmented MP4 (``movflags=frag_keyframe+empty_moov``) would
  also survive a process killed outright, but it cannot hold the edit list that AAC's priming samples need: the
  muxer then shifts every timestamp (measured: +128 ms on an 8 kHz track), and exact timestamps come first. A
  process killed outright leaves its temporary file, never anything under a final name.
- ``NAME_mask.mkv``: the label maps as FFV1 ``gray`` (8 bits per pixel) in Matroska. FFV1 is lossless and intra-only
  (every frame reads back exactly and on its own), ships in FFmpeg's built-in encoders (no external library), and
  a mask compresses to a few percent of its raw size. H.264 lossless would need ``yuv444p`` and a range-exact
  round trip through a colour space; PNG frames are the optional ``mask-frames`` output.
- ``NAME_stats.csv``: per frame its index, timestamp and each class's share of the pixels.

Every file is written under a temporary name and renamed when the run ends: on success, on Ctrl-C/SIGTERM and at
a damaged frame alike, the files are finalized first (they then hold every frame segmented so far), so nothing
half-written ever sits under a final name.
"""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import shutil
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from .predict import SegmentationResult, Segmenter

__all__ = [
    "VIDEO_OUTPUTS",
    "VIDEO_SUFFIXES",
    "Frame",
    "TemporalSmoothing",
    "VideoDecodeError",
    "VideoReader",
    "VideoWriter",
    "flicker",
    "is_video",
    "predict_video",
    "read_masks",
    "require_av",
    "segment_frames",
    "segment_video",
]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv")
DEFAULT_KINDS = ("overlay", "mask", "stats")
VIDEO_OUTPUTS = {
    "overlay": "_overlay.mp4",  # H.264 yuv420p, source timestamps, audio copied
    "mask": "_mask.mkv",  # FFV1 gray: the label maps, lossless
    "stats": "_stats.csv",  # per frame: index, time, share of each class
    "mask-frames": "_frames",  # a folder of palette PNG masks, one per frame (optional)
}
X264_OPTIONS = {"preset": "veryfast", "crf": "18", "tune": "zerolatency"}  # zerolatency: no frame held back


def require_av() -> Any:
    """The ``av`` module (PyAV), or an ImportError whose message is the one line to fix it."""
    try:
        import av
    except ImportError:
        raise ImportError("video needs PyAV: pip install 'fcnseg[video]'") from None
    return av


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoDecodeError(Exception):
    """A clip that cannot be opened, or is damaged part way (the frames before the damage were delivered)."""


@dataclass
class Frame:
    """One decoded frame as displayed: ``image`` upright RGB; ``time`` in seconds on the source's clock."""

    index: int
    pts: int
    time: float
    image: Image.Image = field(repr=False)
    packets: list[Any] = field(default_factory=list, repr=False)  # audio packets demuxed before it, to copy


def _open_container(source: str | Path) -> Any:
    """``0``, ``1``...: a V4L2 camera; ``-``: a stream on stdin; anything else: a file or a URL FFmpeg reads."""
    av = require_av()
    text = str(source)
    if text.isdigit():
        return av.open(f"/dev/video{text}", format="v4l2")
    if text == "-":
        return av.open(sys.stdin.buffer, mode="r")
    options = {"rtsp_transport": "tcp"} if text.startswith("rtsp://") else {}
    return av.open(text, options=options, timeout=30.0)


class VideoReader:
    """An opened clip or stream: its video stream, audio streams, and :meth:`frames`.

    Args:
        source: a file path, a URL (``rtsp://``, ``http://``...), ``"-"`` (stdin) or a camera number.
        label: how messages name it (default: ``source``).
    """

    def __init__(self, source: str | Path, *, label: str | None = None) -> None:
        av = require_av()
        self.label = label or str(source)
        try:
            self.container = _open_container(source)
        except (av.error.FFmpegError, OSError) as e:
            raise VideoDecodeError(f"{self.label}: cannot open as video ({e})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoDecodeError(f"{self.label}: no video stream")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"  # FFmpeg decodes several frames in its own threads
        self.audio = list(self.container.streams.audio)
        self.time_base: Fraction = self.video.time_base or Fraction(1, 90000)
        self.rate: Fraction = self.video.guessed_rate or self.video.average_rate or Fraction(25)
        self.notes: list[str] = []  # what was converted, said once each (10-bit input, rotation, dropped frames)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _frame(self, f: Any, index: int, last_pts: int | None) -> Frame:
        if f.format.components and max(c.bits for c in f.format.components) > 8:
            self._note(f"{f.format.name} ({max(c.bits for c in f.format.components)}-bit) converted to 8-bit RGB")
        pixels = f.to_ndarray(format="rgb24")  # (H, W, 3) uint8, the stored orientation
        turns = round((f.rotation or 0) / 90) % 4  # display matrix: counterclockwise degrees
        if turns:
            pixels = np.ascontiguousarray(np.rot90(pixels, turns))
            self._note(f"rotated by {turns * 90} degrees counterclockwise, as its display matrix asks")
        pts = f.pts if f.pts is not None else round(index / self.rate / self.time_base)
        if last_pts is not None and pts <= last_pts:  # a broken stream's repeated stamp: keep the order strict
            pts = last_pts + 1
        return Frame(index, pts, float(pts * self.time_base), Image.fromarray(pixels))

    def frames(self, *, max_frames: int | None = None, duration: float | None = None) -> Iterator[Frame]:
        """Decoded frames in order, each carrying the audio packets read before it (the last one, the rest).

        Stops after ``max_frames`` frames or ``duration`` seconds of the source's clock. Frames before the first
        key frame (a stream cut mid-GOP) cannot be decoded whole and are dropped, with a note. A damaged file
        raises :class:`VideoDecodeError` after the frames before the damage.
        """
        av = require_av()
        held: Frame | None = None
        audio: list[Any] = []
        index, first, dropped = 0, None, 0
        error, stopped = None, False
        try:
            for packet in self.container.demux(self.video, *self.audio):
                if packet.stream.type == "audio":
                    if packet.size:
                        audio.append(packet)
                    continue
                for f in packet.decode():
                    if index == 0 and not f.key_frame:
                        dropped += 1
                        continue
                    frame = self._frame(f, index, held.pts if held else None)
                    first = frame.time if first is None else first
                    if (max_frames is not None and index >= max_frames) or (
                        duration is not None and frame.time - first >= duration
                    ):
                        raise StopIteration
                    if held is not None:
                        held.packets, audio = audio, []
                        yield held
                    held, index = frame, index + 1
        except StopIteration:
            stopped = True
        except av.error.FFmpegError as e:
            error = e
        if isinstance(error, av.error.FFmpegError):  # the frames the decoder's threads finished before the damage
            with contextlib.suppress(av.error.FFmpegError):
                for f in self.video.decode(None):
                    if held is not None:
                        held.packets, audio = audio, []
                        yield held
                    held, index = self._frame(f, index, held.pts if held else None), index + 1
            where = f"after frame {index - 1} ({held.time:.3f} s)" if held else "before its first frame"
            error = VideoDecodeError(f"{self.label}: damaged {where}: {error}")
        if error is None and not stopped:
            error = self._truncation(index + dropped, held)
        if dropped:
            self._note(f"{dropped} frame{'s' * (dropped > 1)} before the first key frame dropped")
        if held is not None:
            held.packets = audio
            yield held
        if error is not None:
            raise error

    def _truncation(self, decoded: int, last: Frame | None) -> VideoDecodeError | None:
        """An error if the file declares more than was decoded: its frame count (MP4/MOV), or else its duration
        (Matroska, AVI...) when no audio stream may be what lasts longer. A stream without an index (MPEG-TS, a
        pipe) declares neither: cut short, it ends silently."""
        declared = self.video.frames
        if declared and decoded < declared:
            return VideoDecodeError(f"{self.label}: truncated or damaged: {decoded} of its {declared} frames decoded")
        if declared or self.audio or not self.container.duration or self.container.format.name == "mpegts":
            return None
        end = self.container.duration / 1e6  # Matroska's is the end time; start_time not added (errs on the quiet side)
        seen = (last.time if last else 0.0) + 2 / float(self.rate) + 0.1  # slack: the last frames' durations, rounding
        if seen < end:
            shown = f"{last.time:.3f} s" if last else "no frame"
            return VideoDecodeError(f"{self.label}: truncated or damaged: ends at {shown} of its {end:.3f} s")
        return None


class TemporalSmoothing:
    """An exponential moving average of the low-resolution logits over consecutive frames.

    ``s_t = weight * s_{t-1} + (1 - weight) * logits_t``: a pixel changes class only when the new class's evidence
    outweighs the past frames', which removes single-frame flicker on a still scene at the cost of a lag of about
    ``1 / (1 - weight)`` frames on moving edges. Holds one (K, h, w) state: feed frames in order.
    """

    def __init__(self, weight: float) -> None:
        if not 0 <= weight < 1:
            raise ValueError(f"smoothing weight must lie in [0, 1), got {weight}")
        self.weight, self.state = weight, None

    def __call__(self, logits: Tensor) -> Tensor:
        """(N, K, h, w) logits of N consecutive frames -> the same, smoothed."""
        out = torch.empty_like(logits)
        for i, x in enumerate(logits):
            if self.state is None or self.state.shape != x.shape:  # the first frame, or a size change
                self.state = x.clone()
            else:
                self.state.mul_(self.weight).add_(x, alpha=1 - self.weight)
            out[i] = self.state
        return out


def flicker(masks: Iterable[np.ndarray]) -> float:
    """Share of pixels whose class differs from the previous frame's, averaged over consecutive pairs."""
    changes, pairs, previous = 0.0, 0, None
    for m in masks:
        if previous is not None and previous.shape == m.shape:
            changes += float(np.mean(previous != m))
            pairs += 1
        previous = m
    return changes / pairs if pairs else 0.0


def _prefetch(items: Iterator[Frame], depth: int) -> Iterator[Frame]:
    """``items`` produced in a thread, at most ``depth`` ahead; its exception is re-raised here, in order."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:  # False once the consumer has stopped
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(entry, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as e:  # handed to the consumer
            offer((done, e))

    thread = threading.Thread(target=produce, name="fcnseg-video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def segment_frames(
    segmenter: Segmenter,
    frames: Iterable[Frame],
    *,
    smooth: TemporalSmoothing | None = None,
    confidence: bool = False,
) -> Iterator[tuple[Frame, SegmentationResult]]:
    """``(frame, result)`` per frame, ``segmenter.batch_size`` frames a forward pass, through
    :meth:`Segmenter.segment_tensors`: the photos' preset, model, TTA, tiles and labels."""
    if smooth is not None and segmenter.tile:
        raise ValueError("temporal smoothing works on whole frames; it cannot be combined with tiles")
    batch: list[Frame] = []

    def run() -> Iterator[tuple[Frame, SegmentationResult]]:
        x = torch.stack([segmenter.preprocess(f.image) for f in batch])
        images = [f.image for f in batch]
        results = segmenter.segment_tensors(images, x, confidence=confidence, temporal=smooth)
        yield from zip(batch, results, strict=True)

    try:
        for frame in frames:
            if batch and batch[0].image.size != frame.image.size:  # a stream may change size mid-way
                yield from run()
                batch = []
            batch.append(frame)
            if len(batch) == segmenter.batch_size:
                yield from run()
                batch = []
    except VideoDecodeError:  # damage: the frames decoded before it are still segmented
        if batch:
            yield from run()
        raise
    if batch:
        yield from run()


def predict_video(
    segmenter: Segmenter,
    source: str | Path | VideoReader,
    *,
    max_frames: int | None = None,
    duration: float | None = None,
    smooth: float | None = None,
    confidence: bool = False,
) -> Iterator[tuple[Frame, SegmentationResult]]:
    """Segment a clip or stream lazily: ``(frame, result)`` per frame, decoding in a thread ahead of the model.

    ``smooth``: the weight of the past in :class:`TemporalSmoothing` (e.g. 0.6), None for none.
    """
    reader = source if isinstance(source, VideoReader) else VideoReader(source)
    frames = _prefetch(reader.frames(max_frames=max_frames, duration=duration), depth=2 * segmenter.batch_size)
    smoothing = TemporalSmoothing(smooth) if smooth else None
    try:
        yield from segment_frames(segmenter, frames, smooth=smoothing, confidence=confidence)
    finally:
        frames.close()
        if reader is not source:
            reader.close()


def _even(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> even height and width for yuv420p, repeating the last row or column when needed."""
    h, w = pixels.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return pixels
    return np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _column_names(categories: Sequence[str]) -> list[str]:
    """CSV headers for the class shares: the class names, with ``#index`` added to a name two classes share."""
    return [f"{n}#{i}" if list(categories).count(n) > 1 else n for i, n in enumerate(categories)]


class VideoWriter:
    """Writes one clip's outputs (``kinds`` from :data:`VIDEO_OUTPUTS`) next to ``base`` (``OUT_DIR/NAME``).

    Frames are written to temporary files as they come; :meth:`close` finalizes the containers and renames each
    file onto its final name (used on success and after an interruption alike: the files then hold every frame
    written), :meth:`discard` removes them. The containers open at the first frame, whose size they take.
    """

    def __init__(self, base: Path, reader: VideoReader, categories: Sequence[str], kinds: Sequence[str]) -> None:
        unknown = set(kinds) - set(VIDEO_OUTPUTS)
        if unknown:
            raise ValueError(f"unknown video outputs {sorted(unknown)}; choose from {','.join(VIDEO_OUTPUTS)}")
        self.paths = {k: base.with_name(base.name + VIDEO_OUTPUTS[k]) for k in kinds}
        self.temps = {k: _temporary(p) for k, p in self.paths.items()}
        base.parent.mkdir(parents=True, exist_ok=True)
        self.reader, self.categories = reader, list(categories)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the frames, upright; set by the first one
        self.notes: list[str] = []
        self._overlay = self._mask = self._stats = None
        self._audio: dict[int, Any] = {}  # input audio stream index -> output stream
        if "stats" in kinds:
            self._stats = open(self.temps["stats"], "w", newline="")  # noqa: SIM115 (closed in close())
            self._csv = csv.writer(self._stats, lineterminator="\n")
            self._csv.writerow(["frame_index", "pts", "time", *_column_names(self.categories)])
        if "mask-frames" in kinds:
            self.temps["mask-frames"].mkdir()

    def _open(self, width: int, height: int) -> None:
        av = require_av()
        tb, rate = self.reader.time_base, self.reader.rate
        if "overlay" in self.paths:
            out = av.open(str(self.temps["overlay"]), "w", format="mp4")
            s = out.add_stream("libx264", rate=rate, options=X264_OPTIONS)
            s.width, s.height, s.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
            s.codec_context.time_base = tb
            s.codec_context.gop_size = max(1, round(float(rate)))  # a key frame, hence a fragment, every second
            for a in self.reader.audio:
                if a.codec_context.name not in out.supported_codecs:
                    self.notes.append(f"audio stream {a.index} ({a.codec_context.name}) not copied: MP4 cannot hold it")
                    continue
                self._audio[a.index] = out.add_stream_from_template(a)
            self._overlay = (out, s)
        if "mask" in self.paths:
            out = av.open(str(self.temps["mask"]), "w", format="matroska")
            s = out.add_stream("ffv1", rate=rate)
            s.width, s.height, s.pix_fmt = width, height, "gray"
            s.codec_context.time_base = tb
            self._mask = (out, s)

    def write(self, frame: Frame, result: SegmentationResult) -> None:
        """Add one frame's outputs (call in frame order)."""
        av = require_av()
        h, w = result.mask.shape
        if self.frames == 0:
            self._open(w, h)
            self.size = (w, h)
        if self._overlay is not None:
            out, s = self._overlay
            pixels = _even(np.asarray(result.overlay()))
            if pixels.shape[:2] != (s.height, s.width):
                raise VideoDecodeError(f"{self.reader.label}: frame {frame.index} changed size to {w}x{h}")
            self._encode(out, s, av.VideoFrame.from_ndarray(pixels, format="rgb24"), frame.pts)
            for packet in frame.packets:
                if packet.stream.index in self._audio:
                    packet.stream = self._audio[packet.stream.index]
                    out.mux(packet)
        if self._mask is not None:
            out, s = self._mask
            labels = av.VideoFrame.from_ndarray(np.ascontiguousarray(result.mask), format="gray")
            self._encode(out, s, labels, frame.pts)
        if self._stats is not None:
            shares = np.bincount(result.mask.reshape(-1), minlength=len(self.categories)) / max(result.mask.size, 1)
            self._csv.writerow([frame.index, frame.pts, f"{frame.time:.6f}", *(f"{s:.6f}" for s in shares)])
        if "mask-frames" in self.temps:
            result.to_image().save(self.temps["mask-frames"] / f"{frame.index:06d}.png")
        self.frames += 1

    def _encode(self, out: Any, stream: Any, image: Any, pts: int) -> None:
        image.pts, image.time_base = pts, self.reader.time_base
        out.mux(stream.encode(image))

    def _finish(self) -> None:
        for pair in (self._overlay, self._mask):
            if pair is not None:
                out, s = pair
                out.mux(s.encode())  # flush the encoder
                out.close()
        self._overlay = self._mask = None
        if self._stats is not None:
            self._stats.close()
            self._stats = None

    def close(self) -> list[Path]:
        """Finalize every file and rename it onto its final name; returns the final paths."""
        if self.frames == 0:
            self.discard()
            return []
        self._finish()
        for kind, tmp in self.temps.items():
            final = self.paths[kind]
            if tmp.is_dir():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        return list(self.paths.values())

    def discard(self) -> None:
        """Remove the temporary files (after a failure that should leave nothing)."""
        with contextlib.suppress(Exception):
            self._finish()
        for tmp in self.temps.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def read_masks(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """``(time, mask)`` per frame of a ``NAME_mask.mkv``: the label maps exactly as written."""
    av = require_av()
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            yield float(f.time), f.to_ndarray(format="gray")


def segment_video(
    segmenter: Segmenter,
    source: str | Path | VideoReader,
    base: str | Path,
    kinds: Sequence[str] = DEFAULT_KINDS,
    *,
    on_frame: Callable[[Frame, SegmentationResult], None] | None = None,
    **options: Any,
) -> tuple[VideoWriter, VideoDecodeError | KeyboardInterrupt | None]:
    """Segment a clip or stream into ``base``'s outputs (``OUT_DIR/NAME`` -> ``NAME_overlay.mp4``...).

    The model runs here while a writer thread encodes the frames before (at most two waiting). ``options`` go to
    :func:`predict_video`; ``on_frame(frame, result)`` is called once each frame is written. The files are
    finalized and renamed in every case but an unexpected error (then removed): after the last frame, at a
    damaged frame and on Ctrl-C/KeyboardInterrupt alike, which come back as the second value (None: the whole
    video). Returns the closed writer (``.frames``, ``.paths``, ``.notes``).
    """
    reader = source if isinstance(source, VideoReader) else VideoReader(source)
    writer = VideoWriter(Path(base), reader, segmenter.categories, kinds)
    stop: VideoDecodeError | KeyboardInterrupt | None = None
    pending: deque = deque()

    def settle(limit: int) -> None:  # wait for all but ``limit`` writes, oldest first
        while len(pending) > limit or (pending and pending[0][2].done()):
            frame, result, done = pending.popleft()
            done.result()
            if on_frame is not None:
                on_frame(frame, result)

    results = predict_video(segmenter, reader, **options)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="fcnseg-video-encode") as pool:
            try:
                for frame, result in results:
                    pending.append((frame, result, pool.submit(writer.write, frame, result)))
                    settle(2)
                settle(0)
            except (VideoDecodeError, KeyboardInterrupt) as e:
                stop = e
                settle(0)  # the frames segmented so far are written (in order) before the files are closed
            finally:
                results.close()  # stops the decoding thread before the container closes
    except BaseException:
        writer.discard()
        raise
    finally:
        if reader is not source:
            reader.close()
    writer.close()
    return writer, stop
