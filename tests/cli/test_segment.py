"""``fcnseg segment`` end to end, on tiny images with a random-init FCN-ResNet50 checkpoint."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import THREE_CLASSES
from imagefiles import exif_rotated, photo, write_bad_files, write_good_oddities
from PIL import Image

from fcnseg import fcn_resnet50, imageio, outputs
from fcnseg.cli import main
from fcnseg.predict import Segmenter

SRC = Path(__file__).resolve().parents[2] / "src"
CATEGORIES = THREE_CLASSES  # the classes of the `checkpoint` fixture (tests/cli/conftest.py)


def segment(*args, checkpoint: Path) -> int:
    return main(["segment", *map(str, args), "--weights", str(checkpoint), "--quiet"])


def read_summary(path: Path) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in csv.DictReader(path.open())}


def path_hash(path: Path) -> str:
    return hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:8]


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_folder_of_formats(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    (src / "trip" / "day2").mkdir(parents=True)
    sizes = {"a.jpg": (48, 64), "b.png": (60, 40), "trip/c.webp": (33, 50), "trip/d.bmp": (40, 40),
             "trip/day2/e.tiff": (41, 37), "trip/day2/f.gif": (30, 45)}  # fmt: skip
    for i, (name, (h, w)) in enumerate(sizes.items()):
        photo(h, w, seed=i).save(src / name)
    (src / "notes.txt").write_text("not an image; skipped by the folder scan")
    out = tmp_path / "out"
    rc = segment(src, "-o", out, "--size", "32", "--save", "mask,color,overlay,probs,json", "--workers", "2",
                 checkpoint=checkpoint)  # fmt: skip
    assert rc == 0
    assert "6 images: 6 segmented, 0 failed, 0 skipped" in capsys.readouterr().out
    for name, (h, w) in sizes.items():
        stem = out / Path(name).with_suffix("")
        mask = Image.open(f"{stem}_mask.png")
        assert mask.mode == "P" and mask.size == (w, h)
        assert Image.open(f"{stem}_color.png").size == Image.open(f"{stem}_overlay.jpg").size == (w, h)
        assert np.load(f"{stem}_probs.npz")["probs"].shape == (3, h, w)
        record = json.loads(Path(f"{stem}.json").read_text())
        assert all(CATEGORIES[c["index"]] == c["name"] for c in record["classes"])
        assert sum(c["pixels"] for c in record["classes"]) == h * w
        counts = np.bincount(np.asarray(mask).reshape(-1), minlength=3)
        for c in record["classes"]:
            assert c["pixels"] == counts[c["index"]] and 1 / 3 <= c["mean_confidence"] <= 1
    rows = read_summary(out / "summary.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows.values())
    assert (rows["e.tiff"]["width"], rows["e.tiff"]["height"]) == ("37", "41")


def test_bad_and_odd_inputs(tmp_path, checkpoint, capsys, monkeypatch):
    src = tmp_path / "in"
    good = write_good_oddities(src)
    bad = write_bad_files(src)
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    locked = src / "locked.png"
    photo(20, 20).save(locked)
    real_open = open

    def deny_locked(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(imageio, "open", deny_locked, raising=False)  # root here: chmod would not stop reads
    out = tmp_path / "out"
    rc = segment(src, svg, tmp_path / "missing.jpg", "-o", out, "--size", "32", "--workers", "0", checkpoint=checkpoint)
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert err.pop(0) == "preprocessing: shorter side resized to 32 (as asked)"
    expected_bad = {**bad, "drawing.svg": "unsupported format", "missing.jpg": "cannot open",
                    "locked.png": "Permission denied"}  # fmt: skip
    assert len(err) == len(expected_bad)
    for name, phrase in expected_bad.items():
        line = next(line for line in err if f"{name}:" in line)
        assert phrase in line
        assert not list(out.glob(f"{Path(name).stem}_*"))  # no output at all for a failed input
    for name, (h, w) in good.items():
        assert Image.open(out / f"{Path(name).stem}_mask.png").size == (w, h), name
        assert Image.open(out / f"{Path(name).stem}_overlay.jpg").size == (w, h), name
    rows = read_summary(out / "summary.csv")
    assert {n for n, r in rows.items() if r["status"] == "failed"} == set(expected_bad)
    assert {n for n, r in rows.items() if r["status"] == "ok"} == set(good)
    assert no_temporary_files(out)


def test_exif_rotated_mask_matches_the_displayed_image(tmp_path, checkpoint):
    upright = photo(40, 24)
    upright.save(tmp_path / "upright.png")
    stored = exif_rotated(upright)
    stored.save(tmp_path / "sideways.png", exif=stored.info["exif"])
    assert segment(tmp_path / "upright.png", tmp_path / "sideways.png", "-o", tmp_path / "o", "--size", "32",
                   "--workers", "0", checkpoint=checkpoint) == 0  # fmt: skip
    a = np.asarray(Image.open(tmp_path / "o" / "upright_mask.png"))
    b = np.asarray(Image.open(tmp_path / "o" / "sideways_mask.png"))
    assert a.shape == (40, 24)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_resume_skips_finished_images_unless_overwrite(tmp_path, checkpoint, capsys):
    for i in range(2):
        photo(30, 40, seed=i).save(tmp_path / f"{i}.png")
    out = tmp_path / "out"
    args = (tmp_path / "*.png", "-o", out, "--size", "32", "--workers", "0")
    assert segment(*args, checkpoint=checkpoint) == 0
    (out / "1_overlay.jpg").unlink()  # as if the first run stopped before finishing image 1
    mtime = (out / "0_mask.png").stat().st_mtime_ns
    capsys.readouterr()
    assert segment(*args, checkpoint=checkpoint) == 0
    assert "2 images: 1 segmented, 0 failed, 1 skipped" in capsys.readouterr().out
    assert (out / "0_mask.png").stat().st_mtime_ns == mtime and (out / "1_overlay.jpg").is_file()
    assert segment(*args, "--overwrite", checkpoint=checkpoint) == 0
    assert "2 segmented" in capsys.readouterr().out


def test_stdin_list_glob_same_stems_and_summary_jsonl(tmp_path, checkpoint, monkeypatch):
    photo(20, 30).save(tmp_path / "x.png")
    photo(22, 30).save(tmp_path / "y.png")
    photo(24, 30).save(tmp_path / "x.jpg")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tmp_path / 'x.png'}\n\n{tmp_path / 'x.jpg'}\n"))
    out = tmp_path / "out"
    rc = segment("-", tmp_path / "*.png", "-o", out, "--size", "32", "--workers", "0", "--summary", "jsonl",
                 checkpoint=checkpoint)  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in rows) == ["x.jpg", "x.png", "y.png"]  # x.png listed twice, done once
    # x.png and x.jpg share a stem: the second one named gets the hash of its path
    assert Image.open(out / "x_mask.png").size == (30, 20)
    assert Image.open(out / f"x-{path_hash(tmp_path / 'x.jpg')}_mask.png").size == (30, 24)
    assert Image.open(out / "y_mask.png").size == (30, 22)


def test_collect_inputs(tmp_path):
    from fcnseg.cli._inputs import collect_inputs

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.PNG", "a/b/notes.txt", "3.png"):
        (tmp_path / name).write_bytes(b"")
    got = collect_inputs([str(tmp_path / "a"), str(tmp_path / "*.png"), str(tmp_path / "*.gif"), "-"],
                         io.StringIO(f"{tmp_path / 'a' / '1.jpg'}\n"))  # fmt: skip
    assert [(str(i.path.relative_to(tmp_path)), str(i.stem)) for i in got] == [
        ("a/1.jpg", "1"), ("a/b/2.PNG", "b/2"), ("3.png", "3"), ("*.gif", "*")
    ]  # fmt: skip


def run_into(out: Path, *inputs, checkpoint: Path, capsys) -> str:
    """One small run into ``out``; returns its last stdout line (the counts)."""
    capsys.readouterr()
    segment(*inputs, "-o", out, "--size", "32", "--workers", "0", "--save", "mask", checkpoint=checkpoint)
    return capsys.readouterr().out.strip().splitlines()[-1]


def assert_every_mask_is_its_own(out: Path) -> dict[str, dict]:
    """Each summary row's mask has the size of the row's input: no image kept another one's mask."""
    rows = {r["input"]: r for r in csv.DictReader((out / "summary.csv").open())}
    for source, row in rows.items():
        assert row["outputs"], source  # skipped rows too
        assert Image.open(row["outputs"]).size == Image.open(source).size, source
        assert (row["width"], row["height"]) == tuple(map(str, Image.open(source).size)), source
    return rows


def test_same_file_name_from_two_folders_is_not_skipped(tmp_path, checkpoint, capsys):
    """Scenario 7: ``segment d1/photo.jpg -o out`` then ``segment d2/photo.jpg -o out``."""
    for d, (h, w) in (("d1", (20, 30)), ("d2", (26, 22))):
        (tmp_path / d).mkdir()
        photo(h, w).save(tmp_path / d / "photo.jpg")
    out = tmp_path / "out"
    assert "1 segmented" in run_into(out, tmp_path / "d1/photo.jpg", checkpoint=checkpoint, capsys=capsys)
    assert "1 segmented, 0 failed, 0 skipped" in run_into(out, tmp_path / "d2/photo.jpg", checkpoint=checkpoint,
                                                          capsys=capsys)  # fmt: skip
    assert Image.open(out / "photo_mask.png").size == (30, 20)  # d1's, untouched
    assert Image.open(out / f"photo-{path_hash(tmp_path / 'd2/photo.jpg')}_mask.png").size == (22, 26)
    line = run_into(out, tmp_path / "d2/photo.jpg", tmp_path / "d1/photo.jpg", checkpoint=checkpoint, capsys=capsys)
    assert "0 segmented, 0 failed, 2 skipped" in line  # each found under its own name, whatever the order
    assert len(assert_every_mask_is_its_own(out)) == 2


def test_adding_files_never_renames_or_mixes_outputs(tmp_path, checkpoint, capsys):
    """Scenario 7: same-stem files, then ``a-2.jpg`` (the old collision suffix) added, then a source changed."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo(20, 30).save(src / "a.jpg")
    photo(24, 30).save(src / "a.png")
    assert "2 segmented" in run_into(out, src, checkpoint=checkpoint, capsys=capsys)
    photo(28, 30).save(src / "a-2.jpg")
    assert "1 segmented, 0 failed, 2 skipped" in run_into(out, src, checkpoint=checkpoint, capsys=capsys)
    assert_every_mask_is_its_own(out)
    photo(32, 36).save(src / "a.png")  # the same path, another photo: redone, not skipped
    assert "1 segmented, 0 failed, 2 skipped" in run_into(out, src, checkpoint=checkpoint, capsys=capsys)
    assert len(assert_every_mask_is_its_own(out)) == 3


def test_output_folder_inside_the_input_folder_is_not_read(tmp_path, checkpoint, capsys):
    """Scenario 8: ``segment photos -o photos/out`` twice."""
    src = tmp_path / "photos"
    src.mkdir()
    photo(20, 30).save(src / "a.png")
    out = src / "out"
    assert "1 image: 1 segmented" in run_into(out, src, checkpoint=checkpoint, capsys=capsys)
    assert "1 image: 0 segmented, 0 failed, 1 skipped" in run_into(out, src, checkpoint=checkpoint, capsys=capsys)
    assert "1 image: 0 segmented" in run_into(out, tmp_path / "photos/**/*.png", checkpoint=checkpoint, capsys=capsys)
    assert sorted(p.name for p in out.iterdir()) == [".fcnseg", "a_mask.png", "summary.csv"]
    assert segment(out, "-o", out, checkpoint=checkpoint) == 1
    assert "inside the output folder" in capsys.readouterr().err


def test_summary_keeps_the_rows_of_every_run(tmp_path, checkpoint, capsys):
    """Scenario 9: runs on a, then b, then a again into one folder; skipped rows carry size and outputs."""
    photo(20, 30).save(tmp_path / "a.png")
    photo(24, 26).save(tmp_path / "b.png")
    out = tmp_path / "out"
    run_into(out, tmp_path / "a.png", checkpoint=checkpoint, capsys=capsys)
    run_into(out, tmp_path / "b.png", checkpoint=checkpoint, capsys=capsys)
    run_into(out, tmp_path / "a.png", checkpoint=checkpoint, capsys=capsys)
    rows = assert_every_mask_is_its_own(out)
    assert {Path(i).name: r["status"] for i, r in rows.items()} == {"a.png": "skipped", "b.png": "ok"}
    assert rows[str(tmp_path / "a.png")]["top_class"] in CATEGORIES


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_summary_rows_merge_by_name(tmp_path, suffix):
    path = tmp_path / f"summary{suffix}"
    outputs.write_summary([{"input": "d1/a.png", "name": "a", "status": "failed", "error": "truncated"},
                           {"input": "b.png", "name": "b", "status": "ok", "width": 3}], path)  # fmt: skip
    rows = outputs.merge_rows(outputs.read_summary(path), [{"input": "/abs/d1/a.png", "name": "a", "status": "ok"}])
    assert [(r["input"], r["status"]) for r in rows] == [("/abs/d1/a.png", "ok"), ("b.png", "ok")]


def test_symlinked_folders_followed_and_loops_reported(tmp_path, capsys):
    """Scenario 10: a symlinked sub-folder is walked; a link back up is named on stderr, not followed."""
    from fcnseg.cli._inputs import collect_inputs

    (tmp_path / "in").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "in/1.png").write_bytes(b"")
    (tmp_path / "elsewhere/2.png").write_bytes(b"")
    (tmp_path / "in/linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "in/loop").symlink_to(tmp_path / "in")
    (tmp_path / "in/self").symlink_to(tmp_path / "in/self")
    got = collect_inputs([str(tmp_path / "in")])
    assert [str(i.stem) for i in got] == ["1", "linked/2"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "in/loop: symbolic link loop" in err[0] and "not followed" in err[0]
    assert "in/self: broken or looping symbolic link" in err[1]


def test_names_from_stdin_never_collide_and_foreign_files_are_kept(tmp_path):
    """Scenario 7: ``find ... | fcnseg segment -`` with one file name in two folders; files without a record."""
    from fcnseg.cli._inputs import collect_inputs, name_inputs

    out = tmp_path / "out"
    out.mkdir()
    (out / "y_mask.png").write_bytes(b"made by someone else")
    lines = "".join(f"{tmp_path / d / n}\n" for d, n in (("d1", "x.png"), ("d2", "x.png"), ("d1", "y.png")))
    named = name_inputs(collect_inputs(["-"], io.StringIO(lines)), out)
    hashed = {d: path_hash(tmp_path / d / "x.png") for d in ("d1", "d2")}
    assert [str(i.name) for i in named] == ["x", f"x-{hashed['d2']}", f"y-{path_hash(tmp_path / 'd1/y.png')}"]


def test_output_folder_not_writable(tmp_path, checkpoint, capsys, monkeypatch):
    photo(20, 20).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("")
    assert segment(tmp_path / "a.png", "-o", tmp_path / "file" / "out", checkpoint=checkpoint) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "file/out: output folder not writable" in err

    from fcnseg.cli import segment as segment_cli

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(segment_cli.tempfile, "TemporaryFile", denied)  # root here: chmod 500 would not stop us
    assert segment(tmp_path / "a.png", "-o", tmp_path / "ro", checkpoint=checkpoint) == 1
    assert "ro: output folder not writable (Permission denied)" in capsys.readouterr().err


def break_overlay_of_b(tmp_path: Path, monkeypatch, error: BaseException) -> Path:
    """Photos a, b, c in ``tmp_path``; writing b's overlay writes half a JPEG and then raises ``error``."""
    for name in ("a", "b", "c"):
        photo(20, 30).save(tmp_path / f"{name}.png")
    real = outputs.WRITERS["overlay"]

    def fails_on_b(result, f, meta):
        if Path(meta["input"]).name == "b.png":
            f.write(b"\xff\xd8 half a jpeg")
            raise error
        real(result, f, meta)

    monkeypatch.setitem(outputs.WRITERS, "overlay", fails_on_b)
    return tmp_path / "out"


def test_disk_full_mid_write(tmp_path, checkpoint, capsys, monkeypatch):
    """A full disk stops the run at once (every later image would fail the same way): one line, and what was
    done before is complete and listed (tests/faults has the other errnos and a real full disk)."""
    out = break_overlay_of_b(tmp_path, monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert segment(tmp_path / "*.png", "-o", out, "--size", "32", "--workers", "0", checkpoint=checkpoint) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("preprocessing:")]
    assert len(err) == 1 and f"cannot write {out / 'b_overlay.jpg'}: the disk is full" in err[0]
    names = {p.name for p in out.iterdir()}
    assert {".fcnseg", "a_mask.png", "a_overlay.jpg", "summary.csv"} <= names and not {
        "b_mask.png",
        "b_overlay.jpg",
    } & names
    assert len({"c_mask.png", "c_overlay.jpg"} & names) in (0, 2)  # c, written meanwhile in the background: whole
    assert read_summary(out / "summary.csv")["a.png"]["status"] == "ok" and no_temporary_files(out)


def test_ctrl_c_leaves_only_complete_outputs(tmp_path, checkpoint, capsys, monkeypatch):
    out = break_overlay_of_b(tmp_path, monkeypatch, KeyboardInterrupt())
    assert segment(tmp_path / "*.png", "-o", out, "--size", "32", "--workers", "0", checkpoint=checkpoint) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".fcnseg", "a_mask.png", "a_overlay.jpg", "summary.csv"]
    assert [r["input"] for r in csv.DictReader((out / "summary.csv").open())] == [str(tmp_path / "a.png")]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}  # fmt: skip


@pytest.mark.slow
def test_sigint_from_outside(tmp_path, checkpoint):
    """A real Ctrl-C (SIGINT) mid-run: exit 130, every file on disk is complete, no temporary files.

    The last input is a named pipe nobody writes to: the run blocks reading it, so it is always mid-run when the
    signal comes, however fast or slow the machine.
    """
    for i in range(11):
        photo(48, 64, seed=i).save(tmp_path / f"{i:02}.png")
    os.mkfifo(tmp_path / "11.png")
    out = tmp_path / "out"
    inputs = [str(tmp_path / f"{i:02}.png") for i in range(12)]
    cmd = [sys.executable, "-m", "fcnseg", "segment", *inputs, "-o", str(out), "--weights", str(checkpoint),
           "--size", "64", "--workers", "0", "--save", "mask,overlay,probs,json"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the JSON is an image's last output: wait for one image to be complete
    assert proc.poll() is None  # still running: it cannot get past the pipe
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert no_temporary_files(out)
    done = {p.name.removesuffix("_mask.png") for p in out.glob("*_mask.png")}
    assert 0 < len(done) < 12
    for stem in done:  # each image has all of its outputs or none
        assert all((out / f"{stem}{suffix}").is_file() for suffix in ("_overlay.jpg", "_probs.npz", ".json"))
    assert len(list(out.glob("*.json"))) == len(done)
    for p in out.iterdir():
        if p.suffix == ".png" or p.suffix == ".jpg":
            Image.open(p).load()
        elif p.suffix == ".npz":
            assert np.load(p)["probs"].shape == (3, 48, 64)
        elif p.suffix == ".json":
            json.loads(p.read_text())


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_merge(tmp_path, checkpoint):
    sizes = [(20, 30), (24, 30), (30, 20), (32, 32), (20, 20)]
    for i, (h, w) in enumerate(sizes):
        photo(h, w, seed=i).save(tmp_path / f"{i}.png")
    (tmp_path / "9-bad.png").write_text("broken")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "fcnseg", "segment", str(tmp_path), "-o", str(out), "--weights", str(checkpoint), "--size", "32",
           "--workers", "0", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0  # one input failed
    assert "6 images: 5 segmented, 1 failed, 0 skipped" in proc.stdout and "over 2 processes" in proc.stdout
    rows = read_summary(out / "summary.csv")
    paths = sorted(rows)
    assert paths == sorted([f"{i}.png" for i in range(5)] + ["9-bad.png"])
    for i, name in enumerate(paths):  # rank r took every 2nd input, in sorted order
        assert rows[name]["rank"] == str(i % 2)
    for i, (h, w) in enumerate(sizes):
        assert Image.open(out / f"{i}_mask.png").size == (w, h)


@pytest.mark.slow
def test_cli_matches_the_python_api_with_tiles_and_tta(tmp_path, checkpoint):
    image = photo(40, 44, seed=5)
    image.save(tmp_path / "t.png")
    args = ("--tile", "--window", "32", "--stride", "8", "--tta", "--tta-scales", "1,0.5")
    assert segment(tmp_path / "t.png", "-o", tmp_path / "o", "--workers", "0", *args, checkpoint=checkpoint) == 0
    seg = Segmenter("fcn_resnet50", checkpoint, device="cpu", size="native", tile=32, stride=8, tta=(1.0, 0.5))
    expected = seg.predict(image).mask
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "t_mask.png")), expected)


def test_weights_none_is_labelled_random(tmp_path, capsys):
    photo(20, 30).save(tmp_path / "a.png")
    rc = main(["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--weights", "none", "--size", "32",
               "--workers", "0", "--save", "mask,json"])  # fmt: skip
    assert rc == 0
    assert "randomly initialised" in capsys.readouterr().err
    record = json.loads((tmp_path / "o" / "a.json").read_text())
    assert record["weights"].startswith("none (random init")
    assert {c["name"] for c in record["classes"]} <= set(__import__("fcnseg").weights.VOC_CATEGORIES)


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for phrase in ("random", "--tile", "--tta", "mask,color,overlay,probs,json", "stdin", "--overwrite"):
        assert phrase in text


def test_example_without_cached_weights_says_where_to_put_them(tmp_path, capsys, torch_home):
    assert main(["segment", "--example", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert str(torch_home / "hub" / "checkpoints" / "fcn_resnet50_coco-1167a1af.pth") in err
    assert not (tmp_path / "o" / "astronaut_mask.png").exists()


@pytest.mark.slow
def test_example_with_cached_default_weights(tmp_path, torch_home, capsys):
    """The official file name in the cache (here holding random weights) is what --example loads."""
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(fcn_resnet50(num_classes=21, aux_loss=True).state_dict(), cache / "fcn_resnet50_coco-1167a1af.pth")
    out = tmp_path / "o"
    assert main(["segment", "--example", "-o", str(out), "--workers", "0", "--quiet", "--save", "mask,json"]) == 0
    assert Image.open(out / "astronaut_mask.png").size == (512, 512)
    assert json.loads((out / "astronaut.json").read_text())["weights"] == "DEFAULT"
    assert json.loads((out / "astronaut.json").read_text())["input_size"] == 520  # official weights keep 520
    assert "preprocessing: shorter side resized to 520 (the official weights' size)" in capsys.readouterr().err


def test_speed_options_reach_the_segmenter(tmp_path, checkpoint, capsys):
    """``--precision``/``--backend`` pick the forward path; its masks agree with fp32 except near ties."""
    photo(40, 56, seed=3).save(tmp_path / "a.png")
    assert segment(tmp_path / "a.png", "-o", tmp_path / "fp32", "--save", "mask", "--workers", "0",
                   checkpoint=checkpoint) == 0  # fmt: skip
    assert segment(tmp_path / "a.png", "-o", tmp_path / "cl", "--save", "mask", "--workers", "0",
                   "--precision", "fp32", "--backend", "eager", checkpoint=checkpoint) == 0  # fmt: skip
    a = np.asarray(Image.open(tmp_path / "fp32" / "a_mask.png"))
    b = np.asarray(Image.open(tmp_path / "cl" / "a_mask.png"))
    assert a.shape == b.shape == (40, 56) and (a == b).mean() > 0.99

    capsys.readouterr()
    assert segment(tmp_path / "a.png", "-o", tmp_path / "bad", "--precision", "int8", "--backend", "eager",
                   checkpoint=checkpoint) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8" in err[0]
    assert not (tmp_path / "bad" / "a_mask.png").exists()


def test_a_run_that_writes_nothing_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["segment", "--example", "-o", str(out), "--quiet"]) == 1  # weights not cached, no network
    assert "fcn_resnet50_coco-1167a1af.pth" in capsys.readouterr().err
    assert not out.exists()
