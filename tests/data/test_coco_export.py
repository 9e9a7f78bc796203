"""COCO exports of annotation tools (CVAT, Label Studio layouts): categories from the file, the reference's
rasterization, images in sub-folders, ``data check``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
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
        "annotation 102 on batch1/b.png: RLE of size 5x5 on a 24x20 image",
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
    classes = json.loads((seg_out / "batch1" / "a.json").read_text())["classes"]
    assert classes and all(names[c["index"]] == c["name"] for c in classes)  # names from the checkpoint
    gt = COCO(str(seg_out / "predictions.coco.json"))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == names[1:]
    files = sorted(i["file_name"] for i in gt.loadImgs(gt.getImgIds()))
    assert files == ["batch1/a.jpg", "batch1/b.png", "batch2/d.png", "c.jpg"]  # as the export names them
    for info in gt.loadImgs(gt.getImgIds()):
        mask = np.asarray(Image.open(seg_out / (info["file_name"].rsplit(".", 1)[0] + "_mask.png")))
        for a in gt.loadAnns(gt.getAnnIds(imgIds=info["id"])):
            np.testing.assert_array_equal(gt.annToMask(a), (mask == a["category_id"]).astype(np.uint8))
        assert {a["category_id"] for a in gt.loadAnns(gt.getAnnIds(imgIds=info["id"]))} == set(np.unique(mask)) - {0}


def road_and_car(root: Path, layout: str, car_last: bool = True) -> Path:
    """A 20x16 image: a road over the bottom half (x 0..19, y 8..15), a car box (x 4..11, y 6..11) on it.

    ``export``: CVAT's layout (road id 1, car id 2); ``coco2017``: COCO's (person 1 as the "road", car 3).
    """
    from seg_datasets import rect

    road_id, car_id = (1, 2) if layout == "export" else (1, 3)
    road = {"id": 1, "image_id": 1, "category_id": road_id, "segmentation": [rect(0, 8, 20, 16)], "area": 160}
    car = {"id": 2, "image_id": 1, "category_id": car_id, "segmentation": [rect(4, 6, 12, 12)], "area": 48}
    cats = [{"id": road_id, "name": "road"}, {"id": car_id, "name": "car"}]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 16}], "categories": cats,
            "annotations": [road, car] if car_last else [car, road]}  # fmt: skip
    folder, name = ("images/default", "instances_default.json") if layout == "export" else ("val2017", None)
    (root / folder).mkdir(parents=True)
    Image.new("RGB", (20, 16)).save(root / folder / "a.png")
    (root / "annotations").mkdir()
    (root / "annotations" / (name or "instances_val2017.json")).write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("car_last", [True, False])
def test_in_an_export_the_later_annotation_is_on_top(tmp_path, capsys, car_last):
    root = road_and_car(tmp_path, "export", car_last)
    mask = np.asarray(CocoSegmentation(root, "default")[0][1])
    expected = np.zeros((16, 20), np.uint8)
    first, last = (1, 2) if car_last else (2, 1)
    boxes = {1: (slice(8, 16), slice(0, 20)), 2: (slice(6, 12), slice(4, 12))}
    expected[boxes[first]] = first
    expected[boxes[last]] = last
    np.testing.assert_array_equal(mask, expected)
    assert main(["data", "check", "--dataset", "coco", str(root), "--split", "default"]) == 0
    # overlap: x 4..11, y 8..11 = 32 pixels of the 160 + 48 - 32 = 176 labelled
    out = capsys.readouterr().out
    assert (
        "overlaps: 18.18% of labelled pixels lie under two or more annotations: the later annotation is on top" in out
    )


def test_coco2017_layout_keeps_the_protocol_overlap_is_ignored(tmp_path, capsys):
    root = road_and_car(tmp_path, "coco2017")
    mask = np.asarray(CocoSegmentation(root, "val")[0][1])
    assert (mask[8:12, 4:12] == 255).all() and (mask[6:8, 4:12] == 7).all() and (mask[12:, :] == 15).all()
    assert main(["data", "check", "--dataset", "coco", str(root), "--split", "val"]) == 0
    assert "overlaps: 18.18% of labelled pixels" in capsys.readouterr().out


def many_categories(root: Path, n: int) -> Path:
    """An export with ``n`` categories whose last one covers the whole 4x4 image."""
    cats = [{"id": i + 1, "name": f"c{i + 1}"} for i in range(n)]
    ann = {"id": 1, "image_id": 1, "category_id": n, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "area": 16}
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], "annotations": [ann],
            "categories": cats}  # fmt: skip
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a.png")
    (root / "result.json").write_text(json.dumps(data))
    return root / "result.json"


def test_254_categories_fit_255_are_refused_naming_the_file(tmp_path, capsys):
    ok = CocoSegmentation.from_file(many_categories(tmp_path / "ok", 254))
    assert (np.asarray(ok[0][1]) == 254).all()  # the last category keeps its own label
    ann = many_categories(tmp_path / "big", 255)
    with pytest.raises(ValueError, match=r"big/result\.json: 255 categories, but masks are 8-bit"):
        CocoSegmentation.from_file(ann)
    assert main(["data", "check", "--ann-file", str(ann)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "big/result.json: 255 categories" in err
    assert main(["data", "check", "--ann-file", str(many_categories(tmp_path / "huge", 300))]) == 1
    assert "300 categories" in capsys.readouterr().err  # not an OverflowError naming no file


MALFORMED = {  # what fuzzing found on 133976e (tracebacks or lines naming no file), and other identity rules
    "file_name null": ({"file_name": None}, None, "'file_name' is None, not str"),
    "no file_name": ({"file_name": ...}, None, "'file_name' is missing"),
    "category name null": (None, {"name": None}, "'name' is None, not str"),
    "no category name": (None, {"name": ...}, "'name' is missing"),
    "NUL in file_name": ({"file_name": "a\x00.png"}, None, "names no file"),
    "image listed twice": ("twice", None, "image id 1 is listed twice"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_one_line_naming_the_file(case, tmp_path, capsys):
    image_edit, category_edit, message = MALFORMED[case]
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], "annotations": [],
           "categories": [{"id": 1, "name": "road"}]}  # fmt: skip
    if image_edit == "twice":
        doc["images"].append({"id": 1, "file_name": "b.png", "width": 4, "height": 4})
    for entry, edit in ((doc["images"][0], image_edit), (doc["categories"][0], category_edit)):
        for key, value in (edit if isinstance(edit, dict) else {}).items():
            if value is ...:
                del entry[key]
            else:
                entry[key] = value
    ann = tmp_path / "result.json"
    ann.write_text(json.dumps(doc))
    assert main(["data", "check", "--ann-file", str(ann)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ann) in err and message in err, err


def test_bytes_that_are_not_json_are_named(tmp_path, capsys):
    ann = tmp_path / "result.json"
    ann.write_bytes(b"\x80\x81 not json")
    assert main(["data", "check", "--ann-file", str(ann)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{ann}: not a COCO instances file" in err
