"""Label Studio's JSON export read as a dataset: against Label Studio's own converter, and its rules by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import CocoSegmentation, get_dataset
from fcnseg.data.check import check_labelstudio
from fcnseg.data.labelstudio import is_val_task, reference_path

REAL = Path(__file__).resolve().parents[1] / "realfiles"
sdk_brush = pytest.importorskip("label_studio_sdk.converter.brush", reason="label-studio-sdk (a dev dependency)")


def _brush(mask: np.ndarray, label: str) -> dict:
    h, w = mask.shape
    rle = sdk_brush.mask2rle(mask.astype(np.uint8) * 255)  # as Label Studio's SDK writes a brush region
    return {"type": "brushlabels", "original_width": w, "original_height": h, "from_name": "tag", "to_name": "image",
            "value": {"format": "rle", "rle": rle, "brushlabels": [label]}}  # fmt: skip


def _polygon(points: list[list[float]], label: str, w: int, h: int) -> dict:
    return {"type": "polygonlabels", "original_width": w, "original_height": h,
            "value": {"points": points, "polygonlabels": [label]}}  # fmt: skip


def _annotation(ident: int, result: list, updated: str, **kw) -> dict:
    return {"id": ident, "result": result, "was_cancelled": False, "updated_at": updated, **kw}


def _write(tmp_path: Path, tasks: list, size: tuple[int, int] = (8, 6)) -> Path:
    for task in tasks:
        name = reference_path(task["data"]["image"])
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (40, 80, 120)).save(tmp_path / name, format="PNG")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    return export


def test_a_real_export_reads_as_label_studios_own_coco_conversion_of_it(tmp_path):
    """Label Studio's polygon export (a file from its converter's tests) gives the mask that Label Studio's own
    converter, turning the same file into COCO, gives through the COCO reader: percent to pixels and rasterizing."""
    from label_studio_sdk.converter import Converter

    for name in ("data_polygon.json", "label_config.xml"):
        shutil.copy(REAL / "labelstudio_json" / name, tmp_path / name)
    Image.new("RGB", (640, 426), (9, 9, 9)).save(tmp_path / "image2", format="JPEG")  # the task's "/image2"
    dataset = get_dataset("label-studio", tmp_path / "data_polygon.json", "all")
    assert dataset.categories == ["__background__", "Airplane", "Car"]  # the config's order, unused Car kept
    _, mask = dataset[0]

    config = (tmp_path / "label_config.xml").read_text()
    converter = Converter(config=config, project_dir=str(tmp_path), download_resources=False)
    converter.convert_to_coco(input_data=str(tmp_path / "data_polygon.json"), output_dir=str(tmp_path / "coco"),
                              output_image_dir=str(tmp_path / "coco" / "images"), is_dir=False)  # fmt: skip
    coco = CocoSegmentation.from_file(tmp_path / "coco" / "result.json")
    expected = np.array(coco.target(0, 426, 640))  # COCO categories 0 Airplane, 1 Car -> labels 1, 2
    assert (np.array(mask) == 1).sum() > 10_000
    assert np.array_equal(np.array(mask), expected)
    report = check_labelstudio(dataset, pixels=True)
    assert report.ok and report.annotations_per_class == [0, 1, 0] and report.labelled_pixels == (expected > 0).sum()


def test_latest_kept_annotation_counts_and_a_later_region_is_on_top(tmp_path):
    w, h = 8, 6
    left = np.zeros((h, w), bool)
    left[:, :5] = True
    old = _annotation(1, [_brush(np.ones((h, w), bool), "road")], "2024-01-01T10:00:00Z")
    new = _annotation(2, [_brush(left, "road"), _polygon([[50, 0], [100, 0], [100, 100], [50, 100]], "car", w, h)],
                      "2024-01-02T10:00:00.5Z")  # fmt: skip
    skipped = _annotation(3, [_brush(np.ones((h, w), bool), "car")], "2024-01-03T10:00:00Z", was_cancelled=True)
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [old, new, skipped]},
        {"id": 2, "data": {"image": "/data/upload/1/b.png"}, "annotations": []},  # not annotated: left out
        {"id": 3, "data": {"image": "/data/upload/1/c.png"}, "annotations": [skipped]},  # only skipped: left out
    ]
    dataset = get_dataset("label-studio", _write(tmp_path, tasks, (w, h)), "all")
    assert dataset.categories == ["__background__", "car", "road"]  # no config: the labels used, sorted
    assert len(dataset) == 1 and dataset.unannotated == 2 and dataset.skipped_annotations == 2
    expected = np.zeros((h, w), np.uint8)
    expected[:, :5] = 2  # road
    expected[:, 4:] = 1  # the car polygon (x from 50% = pixel 4), drawn later, over the road
    assert np.array_equal(np.array(dataset[0][1]), expected)

    gt = _annotation(4, [_brush(np.ones((h, w), bool), "car")], "2023-01-01T00:00:00Z", ground_truth=True)
    tasks[0]["annotations"].append(gt)  # a ground-truth annotation wins over a later one
    dataset = get_dataset("label-studio", _write(tmp_path, tasks, (w, h)), "all")
    assert (np.array(dataset[0][1]) == 1).all()


def test_data_check_names_what_is_wrong_and_counts_what_is_left_out(tmp_path, capsys):
    w, h = 8, 6
    ok = _annotation(1, [_brush(np.ones((h, w), bool), "cat"), {"type": "choices", "value": {"choices": ["x"]}}], "")
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [ok]},
        {"id": 2, "data": {"image": "/data/upload/1/b.png"}, "annotations": []},
    ]
    export = _write(tmp_path, tasks, (w, h))
    assert main(["data", "check", "--dataset", "label-studio", str(export)]) == 0
    out = capsys.readouterr().out
    assert "regions: cat 1" in out and "1 of the export's 2 tasks have no annotation" in out
    assert "1 regions that are not brush or polygon labels are left out" in out

    bad = _brush(np.ones((h + 1, w), bool), "cat")  # drawn on another size than the image's
    tasks += [
        {"id": 5, "data": {"image": "/data/upload/1/c.png"}, "annotations": [_annotation(7, [bad], "")]},
        {"id": 6, "data": {"image": "/data/local-files/?d=../../etc/passwd"}, "annotations": [ok]},
        {"id": 8, "data": {"image": "/data/upload/1/d.png"},
         "annotations": [_annotation(9, [{"type": "brushlabels", "value": {"rle": [1]}}], "")]},
    ]  # fmt: skip
    export.write_text(json.dumps(tasks))
    Image.new("RGB", (w, h), 0).save(tmp_path / "upload/1/c.png")
    assert main(["data", "check", "--dataset", "label-studio", str(export)]) == 1
    out = capsys.readouterr().out
    assert "upload/1/c.png: 8x6 as displayed, but task 5's regions were drawn on 8x7" in out
    assert "task 6: image '/data/local-files/?d=../../etc/passwd' names no file under the image root" in out
    assert "task 8: annotation 9: brushlabels region without a label" in out
    dataset = get_dataset("label-studio", export, "all")
    with pytest.raises(ValueError, match="names no file under the image root"):
        dataset[[dataset.task_id(i) for i in range(len(dataset))].index(6)]


def test_images_are_read_as_displayed_as_label_studio_draws_on_them(tmp_path):
    """A photo stored 2x1 with EXIF orientation 8 is shown 1x2: its regions are drawn on that, and so it is read."""
    shutil.copy(REAL / "exif" / "orientation_rectangle.jpg", tmp_path / "r.jpg")
    top = np.array([[True], [False]])
    tasks = [{"id": 1, "data": {"image": "r.jpg"}, "annotations": [_annotation(1, [_brush(top, "sky")], "")]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    dataset = get_dataset("label-studio", tmp_path / "export.json", "all")
    image, mask = dataset[0]
    assert image.size == mask.size == (1, 2) and dataset.image_size(0) == (2, 1)
    assert np.array(mask).tolist() == [[1], [0]]
    assert check_labelstudio(dataset).ok


def test_references_map_to_the_folders_label_studio_serves_them_from():
    assert reference_path("/data/upload/3/ab12-x.jpg") == "upload/3/ab12-x.jpg"
    assert reference_path("http://127.0.0.1:8080/data/upload/3/x.jpg") == "upload/3/x.jpg"
    assert reference_path("/data/local-files/?d=photos/2024/x.jpg") == "photos/2024/x.jpg"
    assert reference_path("photos/x.jpg") == "photos/x.jpg"
    for bad in ("https://example.com/x.jpg", "s3://bucket/x.jpg", "/data/local-files/?d=a/../../x", "../x", ""):
        with pytest.raises(ValueError):
            reference_path(bad)


def test_splits_are_a_stable_fifth_by_task_id(tmp_path):
    ids = range(1, 401)
    val = {i for i in ids if is_val_task(i)}
    assert 50 < len(val) < 110  # one in five, by a hash
    tasks = [{"id": i, "data": {"image": f"{i}.png"}, "annotations": [_annotation(i, [], "")]} for i in range(1, 41)]
    export = _write(tmp_path, tasks)
    train, valid = (get_dataset("label-studio", export, s) for s in ("train", "val"))
    t, v = ({d.task_id(i) for i in range(len(d))} for d in (train, valid))
    assert t | v == set(range(1, 41)) and not t & v and v == {i for i in range(1, 41) if is_val_task(i)}
