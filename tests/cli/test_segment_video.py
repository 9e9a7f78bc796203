"""``fcnseg segment`` on clips and live streams, with a random-init FCN-ResNet50 checkpoint at size 32.

The live test serves a stream itself, over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from checkpoints import THREE_CLASSES
from PIL import Image
from videoclips import audio_packets, decoded, write_clip

from fcnseg.cli import main

av = pytest.importorskip("av", reason="video needs PyAV: pip install 'fcnseg[video]'")

from fcnseg import video  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
CATEGORIES = THREE_CLASSES  # the classes of the `checkpoint` fixture (tests/cli/conftest.py)


def segment(*args, checkpoint: Path) -> int:
    return main(["segment", *map(str, args), "--weights", str(checkpoint), "--size", "32", "--quiet"])


def summary(out: Path) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in csv.DictReader((out / "summary.csv").open())}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}  # fmt: skip


@pytest.mark.slow
def test_folder_mixing_photos_and_clips(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(src / "photo.jpg")
    times = write_clip(src / "walk.mp4", frames=6, audio=1)
    write_clip(src / "phone.mov", frames=4, rotation=-90)
    out = tmp_path / "out"
    assert segment(src, "-o", out, "--save", "mask,overlay,coco,mask-frames", checkpoint=checkpoint) == 0
    rows = summary(out)
    assert {k: r["status"] for k, r in rows.items()} == {"photo.jpg": "ok", "walk.mp4": "ok", "phone.mov": "ok"}
    assert (rows["phone.mov"]["width"], rows["phone.mov"]["height"]) == ("48", "64")  # upright
    assert (out / "photo_mask.png").is_file()
    masks = list(video.read_masks(out / "walk_mask.mkv"))
    assert [t for t, _ in masks] == pytest.approx(times, abs=1e-3)
    assert [t for t, _ in decoded(out / "walk_overlay.mp4")] == pytest.approx(times, abs=1e-3)
    assert audio_packets(out / "walk_overlay.mp4") == audio_packets(src / "walk.mp4")
    pngs = sorted((out / "walk_frames").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
    for p, (_, m) in zip(pngs, masks, strict=True):  # the PNGs and the lossless video hold the same labels
        np.testing.assert_array_equal(np.asarray(Image.open(p)), m)
    coco = json.loads((out / "predictions.coco.json").read_text())
    frames = [im for im in coco["images"] if im.get("video", "").endswith("walk.mp4")]
    assert [(im["frame_index"], im["timestamp"]) for im in frames] == [
        (i, pytest.approx(t)) for i, t in enumerate(times)
    ]
    assert len(coco["images"]) == 1 + 6 + 4
    # a rerun skips everything: records say which file each name's outputs came from
    assert segment(src, "-o", out, "--save", "mask,overlay,mask-frames", checkpoint=checkpoint) == 0
    assert {r["status"] for r in summary(out).values()} == {"skipped"}


@pytest.mark.slow
def test_damaged_clip_is_one_error_line_and_the_rest_goes_on(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_clip(src / "whole.mkv", frames=24, container="matroska")
    data = (src / "whole.mkv").read_bytes()
    (src / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    (src / "junk.mp4").write_bytes(b"\0" * 300)
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(src / "photo.png")
    (src / "whole.mkv").unlink()
    out = tmp_path / "out"
    assert segment(src, "-o", out, checkpoint=checkpoint) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 2
    assert any("cut.mkv: truncated or damaged" in e for e in errors)
    assert any("junk.mp4: cannot open as video" in e for e in errors)
    rows = summary(out)
    assert (rows["cut.mkv"]["status"], rows["junk.mp4"]["status"], rows["photo.png"]["status"]) == (
        "failed", "failed", "ok",
    )  # fmt: skip
    written = len(decoded(src / "cut.mkv"))
    assert 0 < written < 24
    assert len(list(video.read_masks(out / "cut_mask.mkv"))) == len(decoded(out / "cut_overlay.mp4")) == written
    assert not list(out.glob("junk*")) and not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    # a damaged clip is redone on the next run (its record says incomplete), the others are skipped
    assert segment(src, "-o", out, checkpoint=checkpoint) == 1
    assert summary(out)["photo.png"]["status"] == "skipped" and summary(out)["cut.mkv"]["status"] == "failed"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_http_stream_with_max_frames(tmp_path, checkpoint, capsys):
    served = tmp_path / "www"
    served.mkdir()
    write_clip(served / "cam.ts", frames=12, container="mpegts")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
        assert segment("--source", url, "--max-frames", "5", "-o", tmp_path / "out", checkpoint=checkpoint) == 0
    finally:
        server.shutdown()
    (overlay,) = (tmp_path / "out").glob("127.0.0.1_*_cam.ts-*_overlay.mp4")
    assert len(decoded(overlay)) == 5
    assert len(list(video.read_masks(str(overlay).replace("_overlay.mp4", "_mask.mkv")))) == 5
    assert "ended; 5 frames written" in capsys.readouterr().out


def test_missing_pyav_is_one_line(tmp_path, checkpoint, capsys, monkeypatch):
    write_clip(tmp_path / "c.mp4", frames=2)
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    assert segment(tmp_path / "c.mp4", "-o", tmp_path / "out", checkpoint=checkpoint) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"fcnseg segment: error: {tmp_path / 'c.mp4'} (a video) needs av: pip install 'fcnseg[video]'"
    )


def test_a_clip_is_skipped_only_with_the_same_settings(tmp_path, checkpoint):
    """As for photos: a re-run at another size, or with smoothing, redoes the clip instead of keeping the old masks.
    Each setting is changed alone, from a run with the first settings that was skipped (so it matched)."""
    src = tmp_path / "in"
    src.mkdir()
    write_clip(src / "walk.mp4", frames=3)
    out = tmp_path / "out"
    first = ["segment", str(src), "-o", str(out), "--save", "mask", "--weights", str(checkpoint), "--size", "32",
             "--quiet"]  # fmt: skip
    assert main(first) == 0
    for other in (["--size", "48"], ["--smooth", "0.5"]):
        assert main(first) == 0  # the first settings again (redone after the change before, then skipped)
        assert main(first) == 0
        assert summary(out)["walk.mp4"]["status"] == "skipped"
        assert main([*first, *other]) == 0
        assert summary(out)["walk.mp4"]["status"] == "ok", other


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_a_clip_finishes_its_files_and_exits_128_plus_the_signal(
    tmp_path, checkpoint, monkeypatch, capsys, sig, code
):
    """SIGTERM (a service manager stopping the run) exits 143 as a terminated process does, Ctrl-C 130; both finish
    the files of the frames done. The signal is sent by the model itself, at its second batch: no clock involved."""
    import signal

    from fcnseg.predict import Segmenter

    clip = tmp_path / "walk.mp4"
    write_clip(clip, frames=6)
    forward, calls = Segmenter.segment_tensors, []

    def segment_then_signal(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), getattr(signal, sig))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_tensors", segment_then_signal)
    out = tmp_path / "out"
    assert segment(clip, "-o", out, "--batch-size", "1", checkpoint=checkpoint) == code
    row = summary(out)["walk.mp4"]
    assert row["status"] == "failed" and row["error"] == "interrupted"
    assert len(list(video.read_masks(out / "walk_mask.mkv"))) >= 1  # the file was finished: it plays
    said = "terminated" if code == 143 else "interrupted"
    assert capsys.readouterr().err.splitlines()[-1] == f"fcnseg segment: {said}"
