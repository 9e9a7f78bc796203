"""Video through the photos' pipeline (``fcnseg.video``), on clips the tests write with PyAV.

Every clip's outputs are checked against independent truth: frame times and audio packets as PyAV reads them
from the source, and masks equal to ``Segmenter.predict`` on the frames PyAV decodes (turned upright by hand).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from videoclips import audio_packets, decoded, picture, write_clip

from fcnseg.predict import Segmenter

av = pytest.importorskip("av", reason="video needs PyAV: pip install 'fcnseg[video]'")

from fcnseg import video  # noqa: E402  (after the skip: the module is only useful with PyAV)

CATEGORIES = ["background", "bar", "band"]


class Tiny(nn.Module):
    """FCN in miniature: a 3x3 conv at half resolution, its logits upsampled bilinearly to the input's size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, len(CATEGORIES), 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.conv(nn.functional.avg_pool2d(x, 2))
        return {"out": nn.functional.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def segmenter(**options) -> Segmenter:
    return Segmenter(Tiny(), weights=None, categories=CATEGORIES, size="native", optimize="none", **options)


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def check_outputs(seg: Segmenter, clip: Path, base: Path, upright: list[np.ndarray], times: list[float]) -> None:
    """The overlay, masks and stats of ``clip`` hold one frame per source frame, at the source's times, with the
    masks ``seg.predict`` gives for the upright frames and the audio copied unchanged."""
    overlay = decoded(base.with_name(base.name + "_overlay.mp4"))
    assert [t for t, _ in overlay] == pytest.approx(times, abs=1e-3)
    h, w = upright[0].shape[:2]
    assert overlay[0][1].shape[:2] == (h + h % 2, w + w % 2)  # yuv420p: even sizes
    masks = list(video.read_masks(base.with_name(base.name + "_mask.mkv")))
    assert [t for t, _ in masks] == pytest.approx(times, abs=1e-3)
    for (_, mask), frame in zip(masks, upright, strict=True):
        np.testing.assert_array_equal(mask, seg.predict(Image.fromarray(frame)).mask)
    with open(base.with_name(base.name + "_stats.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame_index"]) for r in rows] == list(range(len(times)))
    assert [float(r["time"]) for r in rows] == pytest.approx(times, abs=1e-3)
    for r, (_, mask) in zip(rows, masks, strict=True):
        shares = np.bincount(mask.ravel(), minlength=3) / mask.size
        assert [float(r[c]) for c in CATEGORIES] == pytest.approx(shares, abs=1e-6)
    assert audio_packets(base.with_name(base.name + "_overlay.mp4")) == audio_packets(clip)


def run(seg: Segmenter, clip: Path, out: Path, **options):
    writer, stop = video.segment_video(seg, clip, out / clip.stem, **options)
    return writer, stop


def test_plain_clip_with_two_audio_streams_and_variable_frame_rate(tmp_path):
    times_ms = [0, 20, 80, 120, 140, 200, 240, 260, 320, 360]  # gaps of 20, 60 and 40 ms
    times = write_clip(tmp_path / "vfr.mp4", times_ms=times_ms, audio=2)
    seg = segmenter(batch_size=3)  # batches of 3 over 10 frames: the last one is partial
    writer, stop = run(seg, tmp_path / "vfr.mp4", tmp_path / "out")
    assert stop is None and writer.frames == 10
    assert len(audio_packets(tmp_path / "vfr.mp4")) == 2
    check_outputs(
        seg, tmp_path / "vfr.mp4", tmp_path / "out" / "vfr", [f for _, f in decoded(tmp_path / "vfr.mp4")], times
    )
    assert no_temporary_files(tmp_path)


def test_no_audio_clip(tmp_path):
    times = write_clip(tmp_path / "a.mkv", frames=6, container="matroska")
    seg = segmenter()
    writer, stop = run(seg, tmp_path / "a.mkv", tmp_path)
    assert stop is None and writer.frames == 6
    check_outputs(seg, tmp_path / "a.mkv", tmp_path / "a", [f for _, f in decoded(tmp_path / "a.mkv")], times)


def test_rotation_metadata_gives_upright_frames(tmp_path):
    """A display matrix of +90 degrees (counterclockwise, as FFmpeg defines it) turns the stored frame's top-left
    marker to the bottom-left: the frames, masks and overlay are 64 high and 48 wide, as a player shows them."""
    times = write_clip(tmp_path / "phone.mp4", frames=5, size=(48, 64), rotation=90)
    reader = video.VideoReader(tmp_path / "phone.mp4")
    first = next(reader.frames()).image
    reader.close()
    assert first.size == (48, 64)
    pixels = np.asarray(first)
    assert pixels[-4, 4].min() > 200 and pixels[4, 4].max() < 240  # marker moved to the bottom-left corner
    seg = segmenter()
    writer, stop = run(seg, tmp_path / "phone.mp4", tmp_path)
    assert stop is None and writer.size == (48, 64)
    upright = [np.rot90(f) for _, f in decoded(tmp_path / "phone.mp4")]  # np.rot90: counterclockwise
    check_outputs(seg, tmp_path / "phone.mp4", tmp_path / "phone", upright, times)


def test_odd_dimensions(tmp_path):
    times = write_clip(tmp_path / "odd.mp4", frames=5, size=(47, 65), pix_fmt="yuv444p")
    seg = segmenter()
    writer, stop = run(seg, tmp_path / "odd.mp4", tmp_path)
    assert stop is None and writer.size == (65, 47)
    check_outputs(seg, tmp_path / "odd.mp4", tmp_path / "odd", [f for _, f in decoded(tmp_path / "odd.mp4")], times)


def test_ten_bit_input_is_converted_and_said(tmp_path):
    times = write_clip(tmp_path / "hdr.mkv", frames=5, pix_fmt="yuv420p10le", container="matroska")
    seg = segmenter()
    writer, stop = run(seg, tmp_path / "hdr.mkv", tmp_path)
    assert stop is None
    reader = video.VideoReader(tmp_path / "hdr.mkv")
    list(reader.frames())
    reader.close()
    assert any("10-bit" in n for n in reader.notes)
    check_outputs(seg, tmp_path / "hdr.mkv", tmp_path / "hdr", [f for _, f in decoded(tmp_path / "hdr.mkv")], times)


def test_stream_starting_with_non_key_frames(tmp_path):
    """A clip cut mid-GOP (its first two packets dropped): output starts at the first frame that decodes whole."""
    write_clip(tmp_path / "full.mkv", frames=12, gop=4, container="matroska")
    with av.open(str(tmp_path / "full.mkv")) as src, av.open(str(tmp_path / "cut.mkv"), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for i, p in enumerate(src.demux(video=0)):
            if p.size and i >= 2:
                p.stream = out
                dst.mux(p)
    frames = decoded(tmp_path / "cut.mkv")
    seg = segmenter()
    writer, stop = run(seg, tmp_path / "cut.mkv", tmp_path)
    assert stop is None and writer.frames == len(frames) == 8  # frames 4..11: from the second key frame on
    check_outputs(seg, tmp_path / "cut.mkv", tmp_path / "cut", [f for _, f in frames], [t for t, _ in frames])


@pytest.mark.parametrize("container,suffix", [("mp4", ".mp4"), ("matroska", ".mkv")])
def test_truncated_file_keeps_frames_up_to_the_damage(tmp_path, container, suffix):
    clip = tmp_path / f"whole{suffix}"
    write_clip(clip, frames=24, container=container)
    if container == "mp4":  # the index (moov) first, as cameras that stream to disk write it
        with av.open(str(clip)) as src, av.open(str(tmp_path / "fs.mp4"), "w", options={"movflags": "faststart"}) as d:
            out = d.add_stream_from_template(src.streams.video[0])
            for p in src.demux(video=0):
                if p.size:
                    p.stream = out
                    d.mux(p)
        clip = tmp_path / "fs.mp4"
    data = clip.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 7 // 10])
    readable = decoded(cut)
    assert 0 < len(readable) < 24
    seg = segmenter()
    writer, stop = run(seg, cut, tmp_path / "out")
    assert isinstance(stop, video.VideoDecodeError) and "truncated" in str(stop) and str(cut) in str(stop)
    assert writer.frames == len(readable)
    check_outputs(seg, cut, tmp_path / "out" / "cut", [f for _, f in readable], [t for t, _ in readable])
    assert no_temporary_files(tmp_path)


def test_unreadable_file(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(video.VideoDecodeError, match="x.mp4: cannot open as video"):
        video.VideoReader(tmp_path / "x.mp4")


def test_interrupt_finishes_the_files(tmp_path):
    """Ctrl-C after the 5th frame is written: every frame segmented by then is in finished, playable files."""
    times = write_clip(tmp_path / "c.mp4", frames=12, audio=1)
    seg = segmenter(batch_size=2)
    seen = []

    def interrupt(frame, result):
        seen.append(frame.index)
        if frame.index == 4:
            raise KeyboardInterrupt

    writer, stop = run(seg, tmp_path / "c.mp4", tmp_path, on_frame=interrupt)
    assert isinstance(stop, KeyboardInterrupt)
    assert 5 <= writer.frames < 12 and seen[:5] == [0, 1, 2, 3, 4]
    n = writer.frames
    overlay = decoded(tmp_path / "c_overlay.mp4")
    assert [t for t, _ in overlay] == pytest.approx(times[:n], abs=1e-3)
    masks = list(video.read_masks(tmp_path / "c_mask.mkv"))
    assert len(masks) == n
    for (_, m), (_, f) in zip(masks, decoded(tmp_path / "c.mp4")[:n], strict=False):
        np.testing.assert_array_equal(m, seg.predict(Image.fromarray(f)).mask)
    assert no_temporary_files(tmp_path)


def test_unexpected_error_leaves_nothing(tmp_path):
    write_clip(tmp_path / "c.mp4", frames=6)

    def fail(frame, result):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run(segmenter(), tmp_path / "c.mp4", tmp_path / "out", on_frame=fail)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


@pytest.mark.parametrize("options", [{"tta": True}, {"tile": 32, "stride": 24}, {"size": 40}], ids=str)
def test_predict_video_is_the_photo_pipeline(tmp_path, options):
    """--tta, --tile and --size act on video frames exactly as on photos: masks equal ``predict`` on each frame."""
    write_clip(tmp_path / "c.mp4", frames=5, size=(48, 64))
    seg = Segmenter(Tiny(), weights=None, categories=CATEGORIES, optimize="none", batch_size=2, **options)
    results = list(seg.predict_video(tmp_path / "c.mp4"))
    frames = decoded(tmp_path / "c.mp4")
    assert [f.index for f, _ in results] == list(range(5))
    for (frame, result), (t, pixels) in zip(results, frames, strict=True):
        assert frame.time == pytest.approx(t)
        np.testing.assert_array_equal(np.asarray(frame.image), pixels)
        np.testing.assert_array_equal(result.mask, seg.predict(Image.fromarray(pixels)).mask)


def test_max_frames_and_duration(tmp_path):
    write_clip(tmp_path / "c.mp4", frames=12)
    seg = segmenter()
    assert [f.index for f, _ in seg.predict_video(tmp_path / "c.mp4", max_frames=3)] == [0, 1, 2]
    assert [f.time for f, _ in seg.predict_video(tmp_path / "c.mp4", duration=0.1)] == pytest.approx([0, 0.04, 0.08])


def test_temporal_smoothing_is_an_exponential_average():
    smooth = video.TemporalSmoothing(0.5)
    frames = torch.tensor([1.0, 3.0, 5.0]).reshape(3, 1, 1, 1)
    out = torch.cat([smooth(frames[:2]), smooth(frames[2:])])  # the state carries over between batches
    assert out.flatten().tolist() == [1.0, 2.0, 3.5]  # 1; 0.5*1 + 0.5*3; 0.5*2 + 0.5*5
    with pytest.raises(ValueError):
        video.TemporalSmoothing(1.0)


def test_smoothing_reduces_flicker_on_a_still_scene(tmp_path):
    """A still scene with sensor noise: the labels of a noisy pixel flip from frame to frame; averaging the
    logits over time keeps them. Flicker (share of pixels changing class between frames) is measured both ways."""
    rng = np.random.default_rng(0)
    scene = picture(3, 48, 64).astype(np.int16)
    with av.open(str(tmp_path / "still.mkv"), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "bgr0"  # lossless: the noise reaches the model as generated
        for i in range(16):
            noisy = np.clip(scene + rng.normal(0, 25, scene.shape), 0, 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode())
    seg = segmenter(batch_size=4)
    plain = video.flicker(r.mask for _, r in seg.predict_video(tmp_path / "still.mkv"))
    smoothed = video.flicker(r.mask for _, r in seg.predict_video(tmp_path / "still.mkv", smooth=0.8))
    assert plain > 0.01
    assert smoothed < plain / 2


def test_flicker_counts_changed_pixels():
    a, b = np.zeros((2, 2), np.uint8), np.array([[0, 1], [0, 0]], np.uint8)
    assert video.flicker([a, b, b]) == pytest.approx((0.25 + 0.0) / 2)


def test_missing_pyav_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)
    with pytest.raises(ImportError, match=r"^video needs PyAV: pip install 'fcnseg\[video\]'$"):
        video.require_av()
