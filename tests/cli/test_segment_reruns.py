"""``fcnseg segment`` re-runs and COCO output: a skip only when nothing that changes the outputs changed, no stale
outputs of an older run, COCO scores and file names that tools can use, and a missing pycocotools said up front."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from checkpoints import THREE_CLASSES
from imagefiles import photo
from PIL import Image

from fcnseg.cli import main
from fcnseg.predict import Segmenter

CATEGORIES = THREE_CLASSES  # the classes of the `checkpoint` fixture (tests/cli/conftest.py)


def segment(*args, checkpoint: Path) -> int:
    return main(["segment", *map(str, args), "--weights", str(checkpoint), "--quiet", "--workers", "0"])


def summary_line(capsys) -> str:
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fcnseg segment:"))


def test_a_replaced_photo_leaves_no_output_of_the_old_one(tmp_path, checkpoint, capsys):
    """The issue's case: mask+overlay of a 64x48 photo; the photo replaced by an 80x40 one and segmented for its
    mask only; then mask+overlay again. The old overlay must go, and the last run must not skip."""
    src, out = tmp_path / "a.png", tmp_path / "out"
    photo(48, 64, seed=0).save(src)
    assert segment(src, "-o", out, "--size", "32", "--save", "mask,overlay", checkpoint=checkpoint) == 0
    assert Image.open(out / "a_overlay.jpg").size == (64, 48)
    photo(40, 80, seed=1).save(src)
    os.utime(src, ns=(1, 10**18))  # a different modification time whatever the file system's clock resolution
    assert segment(src, "-o", out, "--size", "32", "--save", "mask", checkpoint=checkpoint) == 0
    assert Image.open(out / "a_mask.png").size == (80, 40)
    assert not (out / "a_overlay.jpg").exists()  # the old photo's overlay is not left beside the new mask
    capsys.readouterr()
    assert segment(src, "-o", out, "--size", "32", "--save", "mask,overlay", checkpoint=checkpoint) == 0
    assert "1 segmented, 0 failed, 0 skipped" in summary_line(capsys)
    assert Image.open(out / "a_overlay.jpg").size == Image.open(out / "a_mask.png").size == (80, 40)
    record = json.loads((out / ".fcnseg" / "a.json").read_text())
    assert record["outputs"] == ["mask", "overlay"] and record["settings"]["size"] == 32


def test_a_skip_needs_the_same_settings(tmp_path, checkpoint, capsys, monkeypatch):
    from fcnseg.optimize import cpu

    real = cpu.cpu_capabilities()  # the record is the subject, not speed: bf16 runs emulated on a CPU without it
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: dataclasses.replace(real, flags=real.flags | {"avx512_bf16"}))
    photo(30, 40, seed=0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    base = (tmp_path / "a.png", "-o", out, "--save", "mask")
    assert segment(*base, "--size", "32", checkpoint=checkpoint) == 0
    capsys.readouterr()
    assert segment(*base, "--size", "32", checkpoint=checkpoint) == 0
    assert "0 segmented, 0 failed, 1 skipped" in summary_line(capsys)  # nothing changed: skipped
    same_bytes = tmp_path / "copy.pth"
    same_bytes.write_bytes(checkpoint.read_bytes())  # the same weights in another file: another file identity
    changes = [
        ("--size", "40"),
        ("--size", "40", "--tile", "--window", "16"),
        ("--size", "40", "--tile", "--window", "16", "--tta", "--tta-scales", "1,0.5"),
        ("--size", "40", "--tile", "--window", "16", "--tta", "--tta-scales", "1,0.5", "--precision", "bf16"),
    ]
    for change in changes:
        assert segment(*base, *change, checkpoint=checkpoint) == 0
        assert "1 segmented, 0 failed, 0 skipped" in summary_line(capsys), change
    assert segment(*base, *changes[-1], checkpoint=same_bytes) == 0
    assert "1 segmented" in summary_line(capsys)
    settings = json.loads((out / ".fcnseg" / "a.json").read_text())["settings"]
    assert settings["weights"]["path"] == os.path.realpath(same_bytes) and settings["speed"]["precision"] == "bf16"
    assert (settings["size"], settings["tile"], settings["tta"]) == (40, [16, None], [1.0, 0.5])


def test_an_output_missing_from_the_record_is_redone(tmp_path, checkpoint, capsys):
    """An interrupted write leaves a record that lists no outputs: the image is redone, not trusted."""
    photo(30, 40, seed=0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = (tmp_path / "a.png", "-o", out, "--size", "32", "--save", "mask")
    assert segment(*args, checkpoint=checkpoint) == 0
    path = out / ".fcnseg" / "a.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "outputs": []}))  # as before the outputs were written
    capsys.readouterr()
    assert segment(*args, checkpoint=checkpoint) == 0
    assert "1 segmented, 0 failed, 0 skipped" in summary_line(capsys)


def test_coco_scores_are_mean_probabilities_without_json(tmp_path, checkpoint):
    from pycocotools.coco import COCO

    photo(40, 48, seed=0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert segment(tmp_path / "a.png", "-o", out, "--size", "32", "--save", "mask,coco", checkpoint=checkpoint) == 0
    expected = Segmenter("fcn_resnet50", checkpoint, device="cpu", size=32).predict(tmp_path / "a.png", confidence=True)
    gt = COCO(str(out / "predictions.coco.json"))
    anns = gt.loadAnns(gt.getAnnIds())
    assert {a["category_id"] for a in anns} == set(np.unique(expected.mask)) - {0}
    for a in anns:
        pixels = expected.mask == a["category_id"]
        assert a["score"] == pytest.approx(float(expected.confidence[pixels].mean()), abs=1e-5)
        assert a["score"] < 1.0  # a random 3-class model is never sure


def test_coco_file_names_are_unique_and_lead_to_the_outputs(tmp_path, checkpoint):
    """Two ``a.png`` from two folders keep two file names, each that of the image's own outputs."""
    from pycocotools.coco import COCO

    for folder, seed in (("x", 0), ("y", 1)):
        (tmp_path / folder).mkdir()
        photo(40, 48, seed=seed).save(tmp_path / folder / "a.png")
    out = tmp_path / "out"
    assert segment(tmp_path / "x", tmp_path / "y", "-o", out, "--size", "32", "--save", "mask,coco",
                   checkpoint=checkpoint) == 0  # fmt: skip
    gt = COCO(str(out / "predictions.coco.json"))
    images = gt.loadImgs(gt.getImgIds())
    hashed = "a-" + hashlib.sha256(os.path.realpath(tmp_path / "y" / "a.png").encode()).hexdigest()[:8]
    assert sorted(i["file_name"] for i in images) == sorted(["a.png", f"{hashed}.png"])
    seg = Segmenter("fcn_resnet50", checkpoint, device="cpu", size=32)
    for info in images:
        name = info["file_name"].removesuffix(".png")
        source = tmp_path / ("x" if name == "a" else "y") / "a.png"
        mask = seg.predict(source).mask
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}_mask.png")), mask)
        for a in gt.loadAnns(gt.getAnnIds(imgIds=info["id"])):
            np.testing.assert_array_equal(gt.annToMask(a), (mask == a["category_id"]).astype(np.uint8))


def test_save_coco_without_pycocotools_fails_before_segmenting(tmp_path, checkpoint, capsys, monkeypatch):
    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as when it is not installed
    photo(30, 40, seed=0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert segment(tmp_path / "a.png", "-o", out, "--size", "32", "--save", "mask,coco", checkpoint=checkpoint) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "fcnseg segment: error: --save coco needs pycocotools: pip install 'fcnseg[coco]'"
    ]
    assert not out.exists()  # nothing segmented, nothing written
