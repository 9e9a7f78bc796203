"""Tiny clips for the video tests, written with PyAV: the real-world facts (rotation, odd sizes, variable frame
rate, audio, 10-bit, damage) made on demand, so no clip file is stored in the repository."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

MS = Fraction(1, 1000)


def picture(i: int, h: int, w: int) -> np.ndarray:
    """Frame ``i``: a bar growing from the left, a band at the bottom, and a white 8x8 marker at the top-left."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[:, : (i * 7) % w] = (200, 60, 40)
    img[h // 2 :, :, 1] = 160
    img[:8, :8] = 255
    return img


def write_clip(
    path: Path,
    *,
    frames: int = 12,
    size: tuple[int, int] = (48, 64),  # (H, W)
    times_ms: list[int] | None = None,  # presentation times; default every 40 ms
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    audio: int = 0,  # number of AAC audio streams
    gop: int = 4,
    container: str | None = None,
) -> list[float]:
    """Write a clip; returns its frames' presentation times in seconds."""
    import av

    h, w = size
    times_ms = times_ms or [40 * i for i in range(frames)]
    with av.open(str(path), "w", format=container) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.time_base = s.codec_context.time_base = MS
        s.codec_context.gop_size = gop
        if codec == "libx264":
            s.codec_context.options = {"bf": "0"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        tracks = [out.add_stream("aac", rate=8000, layout="mono") for _ in range(audio)]
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(picture(i, h, w), format="rgb24")
            f.pts, f.time_base = t, MS
            out.mux(s.encode(f))
        out.mux(s.encode())
        for k, a in enumerate(tracks):
            for j in range(6):
                tone = np.sin(np.arange(1024) * (0.05 + 0.03 * k) + j).astype(np.float32)[None] * 0.3
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                af.sample_rate, af.pts = 8000, j * 1024
                out.mux(a.encode(af))
            out.mux(a.encode())
    return [t / 1000 for t in times_ms]


def decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    """``(time, RGB frame as stored)`` per frame, decoded with PyAV alone, one frame at a time (display matrix not
    applied); in a damaged file, the frames before the damage."""
    import av

    found = []
    with av.open(str(path)) as c:
        try:
            for f in c.decode(video=0):
                found.append((float(f.time), f.to_ndarray(format="rgb24")))
        except av.error.InvalidDataError:
            pass
    return found


def audio_packets(path: Path) -> list[list[tuple[float, bytes]]]:
    """Per audio stream, its packets as ``(time in seconds, bytes)``: what a copy must keep unchanged."""
    import av

    with av.open(str(path)) as c:
        streams = list(c.streams.audio)
        found: list[list[tuple[float, bytes]]] = [[] for _ in streams]
        for p in c.demux(*streams) if streams else ():  # demux() with no stream reads them all
            if p.size:
                found[streams.index(p.stream)].append((float(p.pts * p.time_base), bytes(p)))
    return found
