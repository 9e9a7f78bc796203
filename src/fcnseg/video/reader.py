"""Clips and streams in: :class:`VideoReader` decodes with PyAV into upright RGB :class:`Frame` objects.

Each frame carries its timestamp on the source's clock and the audio packets demuxed before it, so the writer can
copy the audio untouched. 10-bit input is converted to 8-bit RGB and the display matrix applied; a damaged or
truncated file raises :class:`VideoDecodeError` after the frames decoded before the damage.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["VIDEO_SUFFIXES", "Frame", "VideoDecodeError", "VideoReader", "is_video", "require_av"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv")


def require_av() -> Any:
    """The ``av`` module (PyAV), or an ImportError whose message is the one line to fix it."""
    try:
        import av
    except ImportError:
        raise ImportError("video needs PyAV: pip install 'fcnseg[video]'") from None
    return av


def is_video(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in VIDEO_SUFFIXES  # a URL too


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
