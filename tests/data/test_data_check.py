"""``check_folder`` / ``fcnseg data check`` find each problem a folder dataset can have, and count class pixels."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from seg_datasets import make_folder

from fcnseg.cli import main
from fcnseg.data.check import check_folder


def test_clean_dataset_counts_class_pixels(tmp_path, capsys):
    truth = make_folder(tmp_path, ["bg", "a", "b"], {"train": [(8, 10), (6, 6)], "val": [(5, 7)]})
    report = check_folder(tmp_path)
    assert report.ok and [s.split for s in report.splits] == ["train", "val"]
    train = report.splits[0]
    labels = np.concatenate([m.reshape(-1) for m in truth["train"].values()])
    assert train.pairs == 2
    assert train.class_pixels == [int((labels == c).sum()) for c in range(3)]
    assert train.ignored_pixels == int((labels == 255).sum())
    assert main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("ok") and "class pixels: bg" in out


def test_every_problem_is_reported(tmp_path, capsys):
    make_folder(tmp_path, ["bg", "fg"], {"train": [(8, 8)] * 5})
    d = tmp_path / "train"
    Image.fromarray(np.where(np.eye(8, dtype=bool), 255, 0).astype(np.uint8)).save(d / "masks/img000.png")  # 0/255
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(d / "masks/img001.png")  # 7 is no class
    Image.new("L", (9, 8)).save(d / "masks/img002.png")  # size mismatch
    (d / "images/img003.png").write_bytes(b"not an image")
    (d / "masks/img004.png").rename(d / "masks/orphan.png")  # img004 loses its mask, orphan has no image

    report = check_folder(tmp_path, ["train"])
    s = report.splits[0]
    assert not report.ok
    assert s.binary_0_255 == ["train/masks/img000.png"]
    assert s.out_of_range == {"train/masks/img001.png": ["7"]}
    assert s.size_mismatches == ["train/masks/img002.png: mask 9x8, image 8x8"]
    assert len(s.unreadable) == 1 and "img003.png" in s.unreadable[0]
    assert s.images_without_mask == ["train/images/img004.png"]
    assert s.masks_without_image == ["train/masks/orphan.png"]
    assert s.empty_classes == [1]  # fg: its only pixels were the 0/255 mask's 255s, the ignore index
    assert s.errors == 6

    assert main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    for text in ("masks hold only 0 and 255", "values outside the classes 0..1", "img001.png: 7", "size mismatches",
                 "images without a mask", "masks without an image", "unreadable", "error: 1 classes have no pixel",
                 "6 problems found"):  # fmt: skip
        assert text in out, text
    assert main(["data", "check", str(tmp_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_missing_classes_file_is_one_line_error(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "folder", "--data-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcnseg data: error:") and "classes.txt" in err and "\n" not in err
