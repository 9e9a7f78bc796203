"""Segmented frames out: :class:`VideoWriter` writes a clip's overlay, masks and statistics; :func:`read_masks`.

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
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .reader import Frame, VideoDecodeError, VideoReader, require_av

if TYPE_CHECKING:
    from ..results import SegmentationResult

__all__ = ["DEFAULT_KINDS", "VIDEO_OUTPUTS", "VideoWriter", "read_masks", "remove_video_outputs"]

DEFAULT_KINDS = ("overlay", "mask", "stats")
VIDEO_OUTPUTS = {
    "overlay": "_overlay.mp4",  # H.264 yuv420p, source timestamps, audio copied
    "mask": "_mask.mkv",  # FFV1 gray: the label maps, lossless
    "stats": "_stats.csv",  # per frame: index, time, share of each class
    "mask-frames": "_frames",  # a folder of palette PNG masks, one per frame (optional)
}
X264_OPTIONS = {"preset": "veryfast", "crf": "18", "tune": "zerolatency"}  # zerolatency: no frame held back


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

    def __init__(
        self,
        base: Path,
        reader: VideoReader,
        categories: Sequence[str],
        kinds: Sequence[str],
        caption: str | None = None,
    ) -> None:
        unknown = set(kinds) - set(VIDEO_OUTPUTS)
        if unknown:
            raise ValueError(f"unknown video outputs {sorted(unknown)}; choose from {','.join(VIDEO_OUTPUTS)}")
        self.paths = {k: base.with_name(base.name + VIDEO_OUTPUTS[k]) for k in kinds}
        self.temps = {k: _temporary(p) for k, p in self.paths.items()}
        base.parent.mkdir(parents=True, exist_ok=True)
        self.reader, self.categories = reader, list(categories)
        self.caption = caption  # written across the top of every overlay frame (random weights say so)
        self.frames = 0
        self.pixels = np.zeros(len(self.categories), np.int64)  # per class, over every frame written
        self.first: Frame | None = None
        self.last: Frame | None = None
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
            image = result.overlay()
            if self.caption is not None:
                from ..transforms import captioned  # torch: imported once frames are written, not for --help

                image = captioned(image, self.caption)
            pixels = _even(np.asarray(image))
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
        counts = np.bincount(result.mask.reshape(-1), minlength=len(self.categories))
        self.pixels += counts[: len(self.categories)]
        if self._stats is not None:
            shares = counts / max(result.mask.size, 1)
            self._csv.writerow([frame.index, frame.pts, f"{frame.time:.6f}", *(f"{s:.6f}" for s in shares)])
        if "mask-frames" in self.temps:
            result.to_image().save(self.temps["mask-frames"] / f"{frame.index:06d}.png")
        self.first = self.first or frame
        self.last = frame
        self.frames += 1

    @property
    def duration(self) -> float:
        """Seconds of the source's clock that the frames written cover (the last one shown for one frame period)."""
        if self.first is None or self.last is None:
            return 0.0
        return self.last.time - self.first.time + 1 / float(self.reader.rate)

    def top_class(self) -> tuple[str, float] | None:
        """The class with the most pixels over every frame written, and its share of them; None before a frame."""
        total = int(self.pixels.sum())
        if not total:
            return None
        top = int(self.pixels.argmax())
        return self.categories[top], float(self.pixels[top]) / total

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


def remove_video_outputs(base: Path, kinds: Sequence[str] = tuple(VIDEO_OUTPUTS)) -> None:
    """Delete a clip's outputs of ``kinds`` at ``base`` (those there are), e.g. an older run's that a new one does
    not rewrite; ``mask-frames`` is a folder."""
    for kind in kinds:
        path = base.with_name(base.name + VIDEO_OUTPUTS[kind])
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def read_masks(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """``(time, mask)`` per frame of a ``NAME_mask.mkv``: the label maps exactly as written."""
    av = require_av()
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            yield float(f.time), f.to_ndarray(format="gray")
