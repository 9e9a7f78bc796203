"""Clips and streams in: :class:`VideoReader` decodes with PyAV into upright RGB :class:`Frame` objects.

Each frame carries its timestamp on the source's clock and the audio packets demuxed before it, so the writer can
copy the audio untouched. 10-bit input is converted to 8-bit RGB and the display matrix applied as FFmpeg's
autorotate does (rotation and reflection). What counts as the clip is what its container presents once its edit
lists are applied and what the decoder returns for it: a file is "truncated or damaged" only when decoding fails,
or when a container that indexes every sample (MP4/MOV/3GP, AVI) could not deliver them all; then
:class:`VideoDecodeError` is raised after the frames decoded before the damage.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "VIDEO_SUFFIXES",
    "Frame",
    "VideoDecodeError",
    "VideoReader",
    "autorotate_steps",
    "display_upright",
    "is_video",
    "require_av",
]

# what FFmpeg's demuxers read and phones, cameras and the web write; checked before image suffixes (.mpg is both)
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".m2v", ".vob", ".flv", ".ogv", ".wmv", ".asf", ".mxf", ".dv", ".y4m",
)  # fmt: skip
# containers whose index lists every sample of the stream, so that a file cut short is known to be (its packets
# fall short of the index); others (Matroska's cues, MPEG-TS) index key frames at most
_SAMPLE_INDEXED = ("mov", "avi")


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


def autorotate_steps(matrix: Sequence[int]) -> tuple[str, ...]:
    """The filters FFmpeg's autorotate inserts for a display matrix (``fftools/ffmpeg_filter.c``, as ``ffplay``).

    ``matrix``: the 9 int32 of ``AV_FRAME_DATA_DISPLAYMATRIX`` (16.16 fixed point, row-major). Steps:
    ``"clock"``/``"cclock"`` (a quarter turn clockwise/counterclockwise), ``"transpose"`` (transpose's
    ``cclock_flip``: the main diagonal as mirror), ``"antitranspose"`` (``clock_flip``), ``"hflip"``, ``"vflip"``,
    or ``"rotate"`` for an angle that is not a multiple of 90 degrees (FFmpeg's ``rotate`` filter: not done here).
    """
    a, b, c, d = (v / 65536 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if not sx or not sy:
        return ()
    theta = float(round(math.degrees(math.atan2(b / sy, a / sx))))  # get_rotation(): -av_display_rotation_get()
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return ("transpose",) if c > 0 else ("clock",)
    if abs(theta - 180) < 1:
        return tuple(step for step, on in (("hflip", a < 0), ("vflip", d < 0)) if on)
    if abs(theta - 270) < 1:
        return ("antitranspose",) if c < 0 else ("cclock",)
    if abs(theta) > 1:
        return ("rotate",)
    return ("vflip",) if d < 0 else ()


_STEPS = {
    "clock": lambda a: np.rot90(a, -1),
    "cclock": lambda a: np.rot90(a, 1),
    "transpose": lambda a: a.transpose(1, 0, 2),
    "antitranspose": lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
}


_SAID = {
    "clock": "turned a quarter clockwise",
    "cclock": "turned a quarter counterclockwise",
    "transpose": "mirrored on its diagonal (a quarter turn and a flip)",
    "antitranspose": "mirrored on its anti-diagonal (a quarter turn and a flip)",
    "hflip": "mirrored left-right",
    "vflip": "mirrored top-bottom",
    "rotate": "not turned (an angle that is not a multiple of 90 degrees)",
}


def display_upright(pixels: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """(H, W, C) stored pixels -> as displayed, through :func:`autorotate_steps`' steps (``rotate`` skipped)."""
    for step in steps:
        pixels = _STEPS[step](pixels) if step in _STEPS else pixels
    return np.ascontiguousarray(pixels)


def _display_matrix(f: Any) -> tuple[int, ...] | None:
    """A decoded frame's display matrix, or None. PyAV builds its side data list with an enum of the types it
    knows, and raises ValueError at a newer one (MV-HEVC's view id): then only ``frame.rotation`` is known."""
    av = require_av()
    try:
        found = f.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    except ValueError:
        found = None
    if found is not None:
        return struct.unpack("<9i", bytes(found))
    if f.rotation:  # counterclockwise degrees alone, as av_display_rotation_set(-rotation) writes (no reflection)
        t = math.radians(f.rotation)
        cos, sin = round(math.cos(t) * 65536), round(math.sin(t) * 65536)
        return (cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30)
    return None


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
        matrix = _display_matrix(f)
        steps = autorotate_steps(matrix) if matrix is not None else ()
        if steps:
            pixels = display_upright(pixels, steps)
            self._note(", ".join(_SAID[s] for s in steps) + ", as its display matrix asks")
        pts = f.pts if f.pts is not None else round(index / self.rate / self.time_base)
        if last_pts is not None and pts <= last_pts:  # a broken stream's repeated stamp: keep the order strict
            pts = last_pts + 1
        return Frame(index, pts, float(pts * self.time_base), Image.fromarray(pixels))

    def _listed(self) -> tuple[int, int] | None:
        """``(samples, shown)`` that the container's index lists for the video stream, when it lists every sample
        (MP4/MOV/3GP, AVI): non-empty samples, and those of them its edit lists keep; else None."""
        if not any(name in _SAMPLE_INDEXED for name in self.container.format.name.split(",")):
            return None
        entries = [e for e in self.video.index_entries if e.size > 0]
        return len(entries), sum(not e.is_discard for e in entries)

    @property
    def expected_frames(self) -> int | None:
        """How many frames the clip shows, for progress: the container's index after its edit lists (MP4/MOV,
        AVI), else its duration times the frame rate (rounded), else None (a live stream)."""
        listed = self._listed()
        if listed is not None:
            return listed[1] or None
        if self.container.duration and self.container.format.name != "mpegts":
            return max(1, round(self.container.duration / 1e6 * float(self.rate)))
        return None

    def frames(self, *, max_frames: int | None = None, duration: float | None = None) -> Iterator[Frame]:
        """Decoded frames in order, each carrying the audio packets read before it (the last one, the rest).

        Stops after ``max_frames`` frames or ``duration`` seconds of the source's clock. Every frame the decoder
        returns is kept when decoding began at a key frame (an edit list may hide that key frame: the first frame
        shown is then not one); a stream cut mid-GOP begins elsewhere, and its frames before the first key frame
        cannot be decoded whole: they are dropped, with a note. A damaged file raises :class:`VideoDecodeError`
        after the frames before the damage.
        """
        av = require_av()
        held: Frame | None = None
        audio: list[Any] = []
        index, dropped, samples = 0, 0, 0
        whole: bool | None = None  # did decoding begin at a key frame? (known at the first video packet)
        first: float | None = None
        error, stopped = None, False
        try:
            for packet in self.container.demux(self.video, *self.audio):
                if packet.stream.type == "audio":
                    if packet.size:
                        audio.append(packet)
                    continue
                if packet.size:
                    samples += 1
                    whole = packet.is_keyframe if whole is None else whole
                for f in packet.decode():
                    if not whole and index == 0 and not f.key_frame:
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
            error = self._truncation(samples, index, held)
        if dropped:
            self._note(f"{dropped} frame{'s' * (dropped > 1)} before the first key frame dropped")
        if held is not None:
            held.packets = audio
            yield held
        if error is not None:
            raise error

    def _truncation(self, samples: int, decoded: int, last: Frame | None) -> VideoDecodeError | None:
        """An error if the file was cut short: fewer samples read than its index lists (MP4/MOV, AVI), or else
        a last frame well before its declared duration (Matroska...) when no audio stream may be what lasts
        longer. Never ``stream.frames``: it counts the samples an edit list discards and a header's empty
        chunks. A stream without an index (MPEG-TS, a pipe) declares neither: cut short, it ends silently."""
        listed = self._listed()
        if listed is not None:
            if samples < listed[0]:
                return VideoDecodeError(
                    f"{self.label}: truncated or damaged: {samples} of the {listed[0]} samples its index lists could "
                    f"be read ({decoded} frames decoded)"
                )
            return None
        if self.audio or not self.container.duration or self.container.format.name == "mpegts":
            return None
        end = self.container.duration / 1e6  # Matroska's is the end time; start_time not added (errs on the quiet side)
        seen = (last.time if last else 0.0) + 2 / float(self.rate) + 0.1  # slack: the last frames' durations, rounding
        if seen < end:
            shown = f"{last.time:.3f} s" if last else "no frame"
            return VideoDecodeError(f"{self.label}: truncated or damaged: ends at {shown} of its {end:.3f} s")
        return None
