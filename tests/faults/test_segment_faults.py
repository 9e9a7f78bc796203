"""``fcnseg segment`` under faults: a full, read-only or failing disk stops the run with one line and keeps what was
done; too little memory fails only the image that needs it; a second run into the same folder is refused."""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from faultinject import CAUSES, fail_rename, fill, one_line, small_disk
from imagefiles import photo
from PIL import Image

from fcnseg import imageio
from fcnseg.cli import main
from fcnseg.predict import Segmenter
from fcnseg.runlock import LOCK_NAME

SRC = Path(__file__).resolve().parents[2] / "src"


def segment(*args: object, checkpoint: Path) -> int:
    return main(["segment", *map(str, args), "--weights", str(checkpoint), "--quiet", "--size", "32", "--workers", "0"])


def summary(out: Path) -> dict[str, str]:
    return {Path(r["input"]).name: r["status"] for r in csv.DictReader((out / "summary.csv").open())}


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "summary.csv"}


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EIO"])
def test_a_write_fault_stops_the_run_with_one_line(photos, tmp_path, checkpoint, capsys, monkeypatch, code):
    out = tmp_path / "out"
    fail_rename(monkeypatch, getattr(errno, code), "b_mask.png")
    assert segment(photos, "-o", out, "--batch-size", "1", checkpoint=checkpoint) == 1
    line = one_line(capsys.readouterr().err, "segment")
    assert line.startswith(f"fcnseg segment: error: cannot write {out / 'b_mask.png'}: {CAUSES[code]}")
    assert f"the outputs of the 1 image segmented are complete, listed in {out / 'summary.csv'}" in line
    assert line.endswith("then run again (finished images are skipped)")
    assert summary(out) == {"a.png": "ok"} and sorted(outputs(out)) == ["a_mask.png", "a_overlay.jpg"]


def test_the_summary_failing_keeps_the_outputs(photos, tmp_path, checkpoint, capsys, monkeypatch):
    out = tmp_path / "out"
    fail_rename(monkeypatch, errno.EROFS, "summary.csv")
    assert segment(photos, "-o", out, checkpoint=checkpoint) == 1
    line = one_line(capsys.readouterr().err, "segment")
    assert line == (
        f"fcnseg segment: error: cannot write {out / 'summary.csv'}: the file system is read-only; the outputs of the "
        "2 images segmented are complete; choose a folder you can write to, or fix its permissions, then run again "
        "(finished images are skipped)"
    )
    assert sorted(outputs(out)) == ["a_mask.png", "a_overlay.jpg", "b_mask.png", "b_overlay.jpg"]


def test_a_real_full_disk_keeps_the_earlier_run(photos, tmp_path, checkpoint, capsys):
    with small_disk(tmp_path / "disk", "4m") as disk:
        out = disk / "out"
        assert segment(photos / "a.png", "-o", out, checkpoint=checkpoint) == 0
        before = outputs(out)
        fill(disk)
        capsys.readouterr()
        assert segment(photos / "b.png", "-o", out, checkpoint=checkpoint) == 1
        line = one_line(capsys.readouterr().err, "segment")
        assert line.startswith(f"fcnseg segment: error: cannot write {out / '.fcnseg' / 'b.json'}: the disk is full")
        assert line.endswith(
            f"; no image of this run was finished, earlier outputs are untouched; free space on {disk}, then run "
            "again (finished images are skipped)"
        )
        assert outputs(out) == before and summary(out) == {"a.png": "ok"}
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_an_image_too_large_for_the_memory_is_refused_up_front(photos, tmp_path, checkpoint, capsys, monkeypatch):
    photo(800, 1000).save(photos / "big.png")
    assert imageio.DECODE_BYTES_PER_PIXEL * 1000 * 800 == 6_400_000
    monkeypatch.setattr(imageio, "available_bytes", lambda: 3_000_000)  # enough for a.png and b.png only
    out = tmp_path / "out"
    assert segment(photos, "-o", out, checkpoint=checkpoint) == 1
    err = capsys.readouterr().err
    assert f"{photos / 'big.png'}: 1000x800 needs 6 MB of memory to decode but 3 MB is available; not decoded" in err
    assert summary(out) == {"a.png": "ok", "b.png": "ok", "big.png": "failed"}


def _out_of_memory_when(test):
    """``Segmenter.segment_tensors`` that runs out of memory on the batches (lists of PIL images) ``test`` picks."""
    real = Segmenter.segment_tensors

    def segment_tensors(self, images, batch, **kwargs):
        if test(images):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, images, batch, **kwargs)

    return segment_tensors


def test_an_out_of_memory_batch_is_retried_one_image_at_a_time(photos, tmp_path, checkpoint, capsys, monkeypatch):
    assert segment(photos, "-o", tmp_path / "alone", "--batch-size", "1", checkpoint=checkpoint) == 0
    batches = []
    too_big = _out_of_memory_when(lambda images: batches.append(len(images)) or len(images) > 1)
    monkeypatch.setattr(Segmenter, "segment_tensors", too_big)
    assert segment(photos, "-o", tmp_path / "out", "--batch-size", "4", checkpoint=checkpoint) == 0
    assert batches == [2, 1, 1]  # the batch of two ran out of memory, then each image alone
    for name in ("a_mask.png", "b_mask.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()


def test_an_image_out_of_memory_alone_fails_alone(photos, tmp_path, checkpoint, capsys, monkeypatch):
    photo(40, 48, seed=2).save(photos / "c.png")
    b = Image.open(photos / "b.png").convert("RGB").tobytes()
    # any batch holding b.png (told apart by its pixels) "needs more memory than there is"
    monkeypatch.setattr(Segmenter, "segment_tensors", _out_of_memory_when(lambda ims: b in [i.tobytes() for i in ims]))
    out = tmp_path / "out"
    assert segment(photos, "-o", out, "--batch-size", "4", checkpoint=checkpoint) == 1
    err = capsys.readouterr().err
    assert f"{photos / 'b.png'}: out of memory segmenting 48x40 alone; try --tile or a smaller --size" in err
    assert summary(out) == {"a.png": "ok", "b.png": "failed", "c.png": "ok"}


def _release_when_dead(proc: subprocess.Popen, fifo: Path) -> threading.Thread:
    """If ``proc`` dies before it opens ``fifo``, open it for reading ourselves, so that the test's writer-side open
    returns (and the test fails on its assertions) instead of blocking for ever."""

    def watch() -> None:
        proc.wait()
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_second_run_into_the_same_folder_is_refused_and_a_dead_runs_lock_taken_over(
    photos, tmp_path, checkpoint, capsys
):
    out = tmp_path / "out"
    fifo = tmp_path / "slow.png"
    os.mkfifo(fifo)  # the first run blocks on reading it: mid-run, lock held, for as long as the test wants
    first = subprocess.Popen(
        [sys.executable, "-m", "fcnseg", "segment", str(fifo), "-o", str(out), "--weights", str(checkpoint),
         "--size", "32", "--workers", "0", "--quiet"],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _release_when_dead(first, fifo)
    with open(fifo, "wb"):  # returns once the first run has opened the file: the event
        assert first.poll() is None, first.stderr.read()
        host = os.uname().nodename
        busy = f"{out} is being written by fcnseg segment (pid {first.pid} on {host}); wait for it to finish"
        assert segment(photos, "-o", out, checkpoint=checkpoint) == 1
        assert one_line(capsys.readouterr().err, "segment").startswith(f"fcnseg segment: error: {busy}")
        assert main(["train", "--dataset", "folder", "--data-root", str(photos), "-o", str(out), "--quiet"]) == 1
        assert one_line(capsys.readouterr().err, "train").startswith(f"fcnseg train: error: {busy}")
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / LOCK_NAME).exists()  # left behind by the killed run
    assert segment(photos, "-o", out, checkpoint=checkpoint) == 0
    err = capsys.readouterr().err
    assert (
        f"fcnseg segment: warning: taking over the lock of fcnseg segment (pid {first.pid} on {host}), which is no "
        "longer running"
    ) in err
    assert summary(out) == {"a.png": "ok", "b.png": "ok"} and not (out / LOCK_NAME).exists()
