"""COCO exports of annotation tools (CVAT, Label Studio layouts): categories from the file, the reference's
rasterization, images in sub-folders, ``data check``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from seg_datasets import make_coco_export

from fcnseg.cli import main
from fcnseg.data import CocoSegmentation, get_dataset
from fcnseg.data.check import DataError, check_coco, validate_training_data


@pytest.fixture(params=["cvat", "labelstudio"])
def export(request, tmp_path):
    ann_file, expected, names = make_coco_export(tmp_path, request.param)
    split = "default" if request.param == "cvat" else "result"
    return tmp_path, split, ann_file, expected, names


def _assert_masks(ds, expected):
    assert len(ds) == len(expected)  # every image kept, the one without annotations too
    for i in range(len(ds)):
        name = ds.image_info(i)["file_name"]
        image, mask = ds[i]
        assert image.size == mask.size
        np.testing.assert_array_equal(np.asarray(mask), expected[name], err_msg=name)


def test_layout_and_explicit_file_read_the_same_labels(export):
    root, split, ann_file, expected, names = export
    ds = CocoSegmentation(root, split)
    assert ds.categories == names  # background, then categories by id (not file order); unused kept
    _assert_masks(ds, expected)
    images = root / "images" if split == "default" else root
    explicit = get_dataset("coco", None, ann_file=ann_file, images=images)
    assert explicit.categories == names
    _assert_masks(explicit, expected)
    _assert_masks(get_dataset("coco", None, ann_file=ann_file), expected)  # image folder found by itself


def test_data_check_reports_counts_and_unused_categories(export, capsys):
    root, split, ann_file, _, _ = export
    assert main(["data", "check", "--dataset", "coco", str(root), "--split", split]) == 0
    out = capsys.readouterr().out
    assert "annotations: tree 2  car 3  unused 0" in out
    assert "warning: 1 categories have no annotation here: unused" in out
    assert "note: 1 images have no annotation" in out and out.strip().endswith("ok")
    assert main(["data", "check", "--ann-file", str(ann_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["annotations_per_class"] == [0, 2, 3, 0]


def test_data_check_finds_missing_images_and_bad_annotations(tmp_path, capsys):
    ann_file, _, _ = make_coco_export(tmp_path, "cvat")
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["category_id"] = 99
    data["annotations"][2]["segmentation"]["size"] = [5, 5]
    ann_file.write_text(json.dumps(data))
    (tmp_path / "images" / "c.jpg").unlink()
    report = check_coco(CocoSegmentation(tmp_path, "default"))
    assert report.missing_images == ["c.jpg"]
    assert report.bad_annotations == [
        "annotation 100 on batch1/a.jpg: category id 99 is not in the file's categories",
        "annotation 102 on batch1/b.png: RLE size [5, 5] but the image is 20x24",
    ]
    assert main(["data", "check", "--dataset", "coco", str(tmp_path), "--split", "default"]) == 1
    assert "3 problems found" in capsys.readouterr().out
    with pytest.raises(DataError, match="category id 99 is not in the file's categories"):
        validate_training_data(CocoSegmentation(tmp_path, "default"))  # what fcnseg train runs first
    with pytest.raises(FileNotFoundError, match=r"c\.jpg: not found under"):
        CocoSegmentation(tmp_path, "default")[2]


def test_missing_split_names_the_files_tried(tmp_path, capsys):
    make_coco_export(tmp_path, "cvat")
    assert main(["data", "check", "--dataset", "coco", str(tmp_path), "--split", "val"]) == 1
    err = capsys.readouterr().err
    assert "no COCO annotations for split 'val'" in err and "annotations/instances_val.json" in err


@pytest.mark.slow
def test_an_export_trains_evaluates_and_segments_from_the_cli(tmp_path, capsys):
    """CVAT layout: train (validating on the same split), eval with --ann-file at the checkpoint's size, segment
    with --save coco; the category names travel in the checkpoint to every output."""
    from PIL import Image
    from pycocotools.coco import COCO

    from fcnseg.predict import Segmenter

    root = tmp_path / "export"
    ann_file, _, names = make_coco_export(root, "cvat")
    run = tmp_path / "run"
    argv = ["train", "--dataset", "coco", "--data-root", root, "--train-split", "default", "--val-split", "default",
            "--weights-backbone", "none", "--base-size", 32, "--crop-size", 32, "-b", 2, "--epochs", 1,
            "--workers", 0, "--no-progress", "--output-dir", run]  # fmt: skip
    assert main(list(map(str, argv))) == 0
    best = run / "best.pth"
    assert Segmenter("fcn_resnet50", best, device="cpu").categories == names  # what segment, serve, export load

    out = tmp_path / "eval.json"
    argv = ["eval", "--weights", best, "--dataset", "coco", "--ann-file", ann_file, "--images", root / "images",
            "--workers", 0, "--no-progress", "--output", out, "--no-plot"]  # fmt: skip
    capsys.readouterr()
    assert main(list(map(str, argv))) == 0
    assert f"preprocessing: shorter side resized to 32 (the size {best} was validated at" in capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["resize_size"] == 32 and r["categories"] == names and r["num_images"] == 4
    assert r["split"] == Path(ann_file).name  # the file scored, not the default split name "val"

    seg_out = tmp_path / "seg"
    argv = ["segment", root / "images", "--weights", best, "--size", 32, "--save", "mask,json,coco",
            "--workers", 0, "-o", seg_out]  # fmt: skip
    assert main(list(map(str, argv))) == 0
    assert json.loads((seg_out / "batch1" / "a.json").read_text())["classes"]  # names from the checkpoint
    assert set(json.loads((seg_out / "batch1" / "a.json").read_text())["classes"]) <= set(names)
    gt = COCO(str(seg_out / "predictions.coco.json"))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == names[1:]
    files = sorted(i["file_name"] for i in gt.loadImgs(gt.getImgIds()))
    assert files == ["batch1/a.jpg", "batch1/b.png", "batch2/d.png", "c.jpg"]  # as the export names them
    for info in gt.loadImgs(gt.getImgIds()):
        mask = np.asarray(Image.open(seg_out / (info["file_name"].rsplit(".", 1)[0] + "_mask.png")))
        for a in gt.loadAnns(gt.getAnnIds(imgIds=info["id"])):
            np.testing.assert_array_equal(gt.annToMask(a), (mask == a["category_id"]).astype(np.uint8))
        assert {a["category_id"] for a in gt.loadAnns(gt.getAnnIds(imgIds=info["id"]))} == set(np.unique(mask)) - {0}
