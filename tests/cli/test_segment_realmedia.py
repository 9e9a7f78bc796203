"""``fcnseg segment`` on real clips and photos (``tests/realfiles/{video,photos,exif}``, sources in its README),
with the random-init checkpoint of ``tests/cli/conftest.py`` at size 32: what each run writes, skips, removes and
says. The frame counts and sizes expected come from PyAV and Pillow reading the files directly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from checkpoints import THREE_CLASSES
from PIL import Image

from fcnseg.cli import main
from fcnseg.cli._progress import FrameProgress

av = pytest.importorskip("av", reason="video needs PyAV: pip install 'fcnseg[video]'")

from fcnseg import video  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "realfiles"
# 15 frames, 176x144: the quickest real clip. 3GP is an MP4 brand (FFmpeg's mov demuxer reads both): the tests of
# re-runs below copy it as .mp4, a suffix every fcnseg version takes for a clip, so that they test what they name
CLIP = REAL / "video" / "bbb_176x144_128kbps_15fps_h263.3gp"


def segment(*args, checkpoint: Path) -> int:
    return main(["segment", *map(str, args), "--weights", str(checkpoint), "--size", "32", "--quiet"])


def summary(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in csv.DictReader((out / "summary.csv").open())}


def shown_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.slow
def test_a_folder_of_real_photos_and_clips_is_done_or_named(tmp_path, checkpoint, capsys):
    """Phone and test-suite clips (edit lists, B-frames, AVI, 3GP, HEVC 10-bit rotated, a mirrored matrix,
    MV-HEVC) and photos (HEIC, AVIF, MPO, EXIF-rotated JPEG) with a sidecar file: exit 0, every clip whole, the
    sidecar named, and the closing line counting photos, clips and frames apart."""
    src = tmp_path / "in"
    shutil.copytree(REAL / "video", src / "clips")
    shutil.copytree(REAL / "photos", src / "photos", ignore=shutil.ignore_patterns("corrupted.heic"))
    shutil.copy(REAL / "exif" / "Landscape_6.jpg", src / "photos")
    (src / "photos" / "IMG_0001.AAE").write_text("<plist/>")  # an iPhone edit sidecar: not an image
    out = tmp_path / "out"
    # size 16 and masks only: about 180 frames, the least work that still reads every one of them
    run = ["segment", str(src), "-o", str(out), "--save", "mask", "--weights", str(checkpoint), "--size", "16",
           "--batch-size", "8", "--quiet"]  # fmt: skip
    assert main(run) == 0
    captured = capsys.readouterr()
    assert f"1 file in the folders skipped, not a format fcnseg reads: {src / 'photos' / 'IMG_0001.AAE'}" in (
        captured.err
    )
    rows = summary(out)
    clips, photos = sorted((REAL / "video").iterdir()), sorted((src / "photos").glob("[!I]*"))
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == len(clips) + len(photos)
    for clip in clips:
        row = rows[f"clips/{clip.stem}"]
        assert int(row["frames"]) == shown_frames(clip), clip.name
        assert len(list(video.read_masks(out / f"clips/{clip.stem}_mask.mkv"))) == int(row["frames"])
        assert float(row["duration"]) > 0 and row["top_class"] in THREE_CLASSES
    reflected = rows["clips/sample_rotate_and_reflect"]
    assert (reflected["width"], reflected["height"]) == ("720", "1080")  # stored 1080x720, shown transposed
    assert (rows["photos/Landscape_6"]["width"], rows["photos/Landscape_6"]["height"]) == ("1800", "1200")
    assert (rows["photos/sample_still_photo"]["width"], rows["photos/sample_still_photo"]["height"]) == ("1080", "1920")
    frames = sum(int(rows[f"clips/{c.stem}"]["frames"]) for c in clips)
    assert f"{len(photos)} photos and {len(clips)} clips ({frames} frames): {len(rows)} segmented, 0 failed" in (
        captured.out
    )
    # a corrupt HEIC added: named on one line, exit 1, the rest skipped as done
    shutil.copy(REAL / "photos" / "corrupted.heic", src / "photos")
    assert main(run) == 1
    err = capsys.readouterr().err
    assert f"fcnseg segment: error: {src / 'photos' / 'corrupted.heic'}: " in err
    rows = summary(out)
    assert rows["photos/corrupted"]["status"] == "failed"
    assert {r["status"] for n, r in rows.items() if n != "photos/corrupted"} == {"skipped"}


def test_a_rerun_with_other_outputs_removes_the_clips_stale_ones(tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CLIP, src / "clip.mp4")
    out = tmp_path / "out"
    assert segment(src, "-o", out, "--save", "mask,mask-frames", checkpoint=checkpoint) == 0
    assert (out / "clip_mask.mkv").is_file() and len(list((out / "clip_frames").iterdir())) == 15
    assert segment(src, "-o", out, "--save", "overlay", checkpoint=checkpoint) == 0
    assert summary(out)["clip"]["status"] == "ok"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("clip")) == ["clip_overlay.mp4", "clip_stats.csv"]


def test_coco_with_two_clips_of_one_name_names_frames_by_their_output_name(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    for folder in ("monday", "tuesday"):
        (src / folder).mkdir(parents=True)
        shutil.copy(CLIP, src / folder / "walk.mp4")
    shutil.copy(REAL / "exif" / "orientation_rectangle.jpg", src / "photo.jpg")
    out = tmp_path / "out"
    assert segment(src, "-o", out, "--save", "mask,coco", checkpoint=checkpoint) == 0
    coco = json.loads((out / "predictions.coco.json").read_text())
    names = [im["file_name"] for im in coco["images"]]
    assert len(names) == len(set(names)) == 1 + 2 * 15
    assert {n for n in names if n.endswith("#0")} == {"monday/walk.mp4#0", "tuesday/walk.mp4#0"}
    assert "photo.jpg" in names
    assert {r["status"] for r in summary(out).values()} == {"ok"}


def test_tile_with_smooth_is_refused_before_any_work(tmp_path, checkpoint, capsys):
    shutil.copy(REAL / "exif" / "orientation_rectangle.jpg", tmp_path / "a.jpg")
    out = tmp_path / "out"
    assert segment(tmp_path / "a.jpg", "-o", out, "--tile", "--smooth", "0.5", checkpoint=checkpoint) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fcnseg segment: error: --smooth works on whole frames; it cannot be combined with --tile"
    )
    assert not out.exists()  # no photo segmented, no summary


def test_a_photo_replaced_by_a_corrupt_file_keeps_no_outputs(tmp_path, checkpoint, capsys):
    photo = tmp_path / "in" / "a.jpg"
    photo.parent.mkdir()
    shutil.copy(REAL / "exif" / "orientation_rectangle.jpg", photo)
    out = tmp_path / "out"
    assert segment(photo.parent, "-o", out, "--save", "mask,overlay", checkpoint=checkpoint) == 0
    assert (out / "a_mask.png").is_file() and (out / "a_overlay.jpg").is_file()
    photo.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg any more")
    assert segment(photo.parent, "-o", out, "--save", "mask,overlay", checkpoint=checkpoint) == 1
    assert summary(out)["a"]["status"] == "failed"
    assert not (out / "a_mask.png").exists() and not (out / "a_overlay.jpg").exists()


def test_a_clip_replaced_by_a_file_that_does_not_open_keeps_no_outputs(tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CLIP, src / "clip.mp4")
    out = tmp_path / "out"
    assert segment(src, "-o", out, checkpoint=checkpoint) == 0
    (src / "clip.mp4").write_bytes(b"\0" * 300)
    assert segment(src, "-o", out, checkpoint=checkpoint) == 1
    assert not [p for p in out.iterdir() if p.name.startswith("clip")]


def test_an_edit_in_place_keeping_size_and_mtime_is_redone(tmp_path, checkpoint):
    """``exiftool -P`` setting the orientation of a camera photo from 6 to 1: one byte, the same size and mtime.
    The photo now shows 1200 wide, not 1800: its outputs are redone, not skipped with the old mask. A ``touch``
    alone (new mtime, same content) is then skipped."""
    photo = tmp_path / "in" / "cam.jpg"
    photo.parent.mkdir()
    shutil.copy(REAL / "exif" / "Landscape_6.jpg", photo)
    out = tmp_path / "out"
    assert segment(photo, "-o", out, "--save", "mask", checkpoint=checkpoint) == 0
    with Image.open(out / "cam_mask.png") as m:
        assert m.size == (1800, 1200)
    st = photo.stat()
    data = bytearray(photo.read_bytes())
    tag = data.find(b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06")  # big-endian IFD entry: Orientation = 6
    data[tag + 9] = 1
    with open(photo, "r+b") as f:  # in place, as exiftool -P does it: the same inode
        f.write(data)
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert segment(photo, "-o", out, "--save", "mask", checkpoint=checkpoint) == 0
    assert summary(out)["cam"]["status"] == "ok"
    with Image.open(out / "cam_mask.png") as m:
        assert m.size == (1200, 1800)
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: the same bytes
    assert segment(photo, "-o", out, "--save", "mask", checkpoint=checkpoint) == 0
    assert summary(out)["cam"]["status"] == "skipped"


def test_clip_progress_is_a_line_every_few_seconds_off_a_terminal():
    """Driven by its clock: 12 frames one second apart, a line every 5 s, with the rate and the time left."""
    now = [0.0]
    stream = io.StringIO()
    progress = FrameProgress("walk.mp4", 20, stream=stream, every=5, clock=lambda: now[0])
    for _ in range(12):
        now[0] += 1
        progress.update()
    progress.close()
    assert stream.getvalue().splitlines() == [
        "fcnseg segment: walk.mp4: 5/20 frames (25%), 1.0 frames/s, about 15 s left",
        "fcnseg segment: walk.mp4: 10/20 frames (50%), 1.0 frames/s, about 10 s left",
    ]
    quiet = io.StringIO()
    silent = FrameProgress("walk.mp4", None, quiet=True, stream=quiet, every=0, clock=lambda: now[0])
    silent.update()
    assert quiet.getvalue() == ""


def test_a_clips_row_has_frames_duration_and_the_top_class_over_the_clip(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CLIP, src / "clip.mp4")
    out = tmp_path / "out"
    assert segment(src, "-o", out, "--save", "mask", checkpoint=checkpoint) == 0
    row = summary(out)["clip"]
    masks = [m for _, m in video.read_masks(out / "clip_mask.mkv")]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=3)
    assert (int(row["frames"]), row["top_class"]) == (15, THREE_CLASSES[int(counts.argmax())])
    assert float(row["top_share"]) == pytest.approx(counts.max() / counts.sum(), abs=1e-6)
    assert float(row["duration"]) == pytest.approx(1.0, abs=0.01)  # 15 frames at 15 fps
    assert "1 photo" not in capsys.readouterr().out
    assert segment(src, "-o", out, "--save", "mask", checkpoint=checkpoint) == 0
    skipped = summary(out)["clip"]
    assert skipped["status"] == "skipped" and (skipped["frames"], skipped["top_class"]) == ("15", row["top_class"])
