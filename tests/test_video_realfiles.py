"""The video reader on real clips from public media test suites (``tests/realfiles/video``, sources in its README).

Each clip is checked against an independent reading: PyAV's own decoding loop (the frames and timestamps a player
gets once the edit lists are applied) and, for orientation, the display matrix applied point by point as its
definition says (``(x', y') = (a x + c y, b x + d y)``, ISO/IEC 14496-12's ``tkhd`` matrix), not through the case
table of FFmpeg's autorotate that the reader follows.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="video needs PyAV: pip install 'fcnseg[video]'")

from fcnseg import video  # noqa: E402

CLIPS = Path(__file__).parent / "realfiles" / "video"


def plain_decode(path: Path) -> tuple[list[float], list[np.ndarray], list[bool], tuple[int, ...] | None]:
    """PyAV alone: each frame's time and stored pixels, whether it is a key frame, and the first display matrix
    (in a damaged file, the frames before the damage)."""
    times, pixels, keys, matrix = [], [], [], None
    with av.open(str(path)) as c, contextlib.suppress(av.error.InvalidDataError):
        for f in c.decode(video=0):
            times.append(float(f.time))
            pixels.append(f.to_ndarray(format="rgb24"))
            keys.append(f.key_frame)
            if len(times) == 1:
                try:
                    found = f.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
                except ValueError:  # a side data type this PyAV has no name for (MV-HEVC's view id)
                    found = None
                matrix = struct.unpack("<9i", bytes(found)) if found is not None else None
    return times, pixels, keys, matrix


def as_displayed(stored: np.ndarray, matrix: tuple[int, ...]) -> np.ndarray:
    """Every stored pixel moved where the display matrix sends it, the result shifted into view."""
    a, b, c, d = (round(matrix[i] / 65536) for i in (0, 1, 3, 4))
    h, w = stored.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    xd, yd = a * x + c * y, b * x + d * y
    xd, yd = xd - xd.min(), yd - yd.min()
    out = np.zeros((yd.max() + 1, xd.max() + 1, stored.shape[2]), stored.dtype)
    out[yd, xd] = stored[y, x]
    return out


def read(path: Path, **options) -> tuple[list[video.Frame], list[str], Exception | None]:
    reader = video.VideoReader(path)
    frames, error = [], None
    try:
        for f in reader.frames(**options):
            frames.append(f)
    except video.VideoDecodeError as e:
        error = e
    finally:
        reader.close()
    return frames, reader.notes, error


# name, frames PyAV decodes, frames the container's header counts (stream.frames), what the file is
REAL = [
    ("dolbyVision-hdr.MOV", 4, 5, "iPhone HEVC 10-bit Dolby Vision HDR, rotated, edit list dropping 1 sample"),
    ("iibbibb_editlist_videoonly.mp4", 12, 13, "H.264 with B-frames, edit list hiding the key frame"),
    ("sample_edit_list_only_preroll_sync_sample.mp4", 16, 17, "edit list: the only sync sample is pre-roll"),
    ("sample.avi", 96, 98, "MPEG-4 Part 2 in AVI, MP3 audio; the header counts two empty chunks"),
    ("bbb_176x144_128kbps_15fps_h263.3gp", 15, 15, "H.263 in 3GP"),
    ("sample_rotate_and_reflect.mp4", 30, 30, "H.264, display matrix of a transpose (rotation + mirror)"),
    ("water_180_mvhevc_5frames.mov", 5, 5, "MV-HEVC (spatial video), side data PyAV cannot name"),
]


@pytest.mark.parametrize("name,decoded,declared", [r[:3] for r in REAL], ids=[r[0] for r in REAL])
def test_every_frame_the_decoder_returns_at_its_time_and_no_false_damage(name, decoded, declared):
    """Intact clips whose header counts more frames than they show (edit lists, empty AVI chunks) are read whole,
    without "truncated or damaged"; frames and times are PyAV's own, from the first frame it shows."""
    with av.open(str(CLIPS / name)) as c:
        assert c.streams.video[0].frames == declared  # what the old reader compared against
    times, stored, keys, matrix = plain_decode(CLIPS / name)
    assert len(times) == decoded
    frames, notes, error = read(CLIPS / name)
    assert error is None
    assert [f.time for f in frames] == pytest.approx(times, abs=1e-6)
    assert [f.index for f in frames] == list(range(decoded))
    assert not [n for n in notes if "dropped" in n]
    for frame, pixels in list(zip(frames, stored, strict=True))[:: max(1, decoded // 4)]:
        upright = as_displayed(pixels, matrix) if matrix else pixels
        np.testing.assert_array_equal(np.asarray(frame.image), upright)


@pytest.mark.parametrize("name", ["iibbibb_editlist_videoonly.mp4", "sample_edit_list_only_preroll_sync_sample.mp4"])
def test_edit_list_hiding_the_key_frame_keeps_the_first_frames_shown(name):
    """Decoding begins at a key frame the edit list hides: the first frame shown is a B- or P-frame, whole, and
    is kept (the old reader dropped 2 of 12, and 16 of 16, as "before the first key frame")."""
    times, _, keys, _ = plain_decode(CLIPS / name)
    assert not keys[0]
    frames, _, _ = read(CLIPS / name)
    assert frames[0].time == pytest.approx(times[0]) == 0.0


@pytest.mark.parametrize(
    "name,size,steps",
    [
        ("sample_rotate_and_reflect.mp4", (720, 1080), ("transpose",)),  # stored 1080x720
        ("dolbyVision-hdr.MOV", (720, 1280), ("clock",)),  # stored 1280x720, a phone held upright
    ],
)
def test_display_matrix_with_and_without_a_mirror(name, size, steps):
    """The full matrix, reflection included: a transpose is not a quarter turn (the old reader turned it
    clockwise, mirroring the picture left-right)."""
    times, stored, _, matrix = plain_decode(CLIPS / name)
    frames, notes, _ = read(CLIPS / name, max_frames=2)
    assert frames[0].image.size == size
    np.testing.assert_array_equal(np.asarray(frames[0].image), as_displayed(stored[0], matrix))
    turned = np.rot90(stored[0], -1)  # a clockwise quarter turn: what a mirror lost looks like
    assert (name == "dolbyVision-hdr.MOV") == np.array_equal(np.asarray(frames[0].image), turned)
    assert any("display matrix" in n for n in notes)
    assert video.autorotate_steps(matrix) == steps


@pytest.mark.parametrize(
    "matrix",
    [(1, 0, 0, 1), (0, 1, -1, 0), (-1, 0, 0, -1), (0, -1, 1, 0), (-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0),
     (0, -1, -1, 0)],
    ids=["identity", "cw", "180", "ccw", "hflip", "vflip", "transpose", "antitranspose"],
)  # fmt: skip
def test_all_eight_orientations_of_a_written_clip(tmp_path, matrix):
    """A faithful clip per orientation (PyAV writes the matrix into ``tkhd``, as a phone does): the reader's
    frames are the stored ones moved point by point by the matrix."""
    a, b, c, d = (v * 65536 for v in matrix)
    full = (a, b, 0, c, d, 0, 0, 0, 1 << 30)
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 48x64, blocky
    path = tmp_path / "m.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264rgb", rate=25, options={"qp": "0"})  # lossless: pixels compare exactly
        s.width, s.height, s.pix_fmt = 64, 48, "rgb24"
        s.set_display_matrix(full)
        for i in range(2):
            f = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode())
    _, stored, _, read_back = plain_decode(path)
    assert (read_back or (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30))[:5] == full[:5]
    frames, _, error = read(path)
    assert error is None and len(frames) == 2
    np.testing.assert_array_equal(np.asarray(frames[0].image), as_displayed(stored[0], full))


def test_a_real_clip_cut_short_is_still_truncated(tmp_path):
    """Frame accounting by the container's index: a real MP4 (index first) cut at 60 % is reported, with the
    frames before the cut delivered."""
    data = (CLIPS / "sample_rotate_and_reflect.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    times, _, _, _ = plain_decode(cut)
    frames, _, error = read(cut)
    assert isinstance(error, video.VideoDecodeError) and "truncated or damaged" in str(error)
    assert 0 < len(frames) == len(times) < 30
