"""Predictions as COCO: the RLEs decode to the predicted masks exactly, and the file loads with pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fcnseg.coco_results import CocoResults, coco_rle
from fcnseg.predict import SegmentationResult

pycocotools = pytest.importorskip("pycocotools")


def _result(h: int, w: int, seed: int) -> SegmentationResult:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    mask[2:9, 3:12] = 1
    mask[rng.random((h, w)) < 0.1] = 3  # scattered pixels: many runs
    conf = rng.uniform(0.3, 1.0, (h, w)).astype(np.float32)
    return SegmentationResult(mask, ["__background__", "cat", "unseen", "dog"], confidence=conf)


def test_rle_round_trips_through_pycocotools():
    from pycocotools import mask as coco_mask

    m = np.random.default_rng(0).random((13, 7)) < 0.4
    rle = coco_rle(m)
    assert rle["size"] == [13, 7] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(coco_mask.decode({**rle, "counts": rle["counts"].encode()}), m)


def test_results_file_loads_back_and_decodes_to_the_masks(tmp_path):
    from pycocotools.coco import COCO

    results = [_result(16, 20, 0), _result(11, 9, 1)]
    coco = CocoResults()
    for i, r in enumerate(results):
        coco.add(f"sub/img{i}.jpg", r)
    path = coco.write(tmp_path / "predictions.coco.json")
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.coco.json"]  # written atomically, no leftovers

    data = json.loads(path.read_text())
    assert data["categories"] == [{"id": c, "name": n, "supercategory": ""} for c, n in
                                  [(1, "cat"), (2, "unseen"), (3, "dog")]]  # fmt: skip
    gt = COCO(str(path))
    for image_id, r in enumerate(results, 1):
        info = gt.loadImgs(image_id)[0]
        assert (info["file_name"], info["height"], info["width"]) == (f"sub/img{image_id - 1}.jpg", *r.mask.shape)
        anns = gt.loadAnns(gt.getAnnIds(imgIds=image_id))
        assert sorted(a["category_id"] for a in anns) == [1, 3]  # background and absent classes: no annotation
        for a in anns:
            c = a["category_id"]
            np.testing.assert_array_equal(gt.annToMask(a), (r.mask == c).astype(np.uint8))
            assert a["area"] == (r.mask == c).sum()
            ys, xs = np.nonzero(r.mask == c)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["score"] == pytest.approx(float(r.confidence[r.mask == c].mean()), abs=1e-6)
    dt = gt.loadRes(data["annotations"])  # also a valid results list for COCO evaluation
    assert len(dt.getAnnIds()) == 4


def test_merge_orders_images_by_name_and_renumbers():
    a, b = CocoResults(), CocoResults()
    a.add("z.jpg", _result(8, 8, 2))
    b.add("a.jpg", _result(8, 8, 3))
    merged = CocoResults.merge([a, b]).document()
    assert [i["file_name"] for i in merged["images"]] == ["a.jpg", "z.jpg"]
    assert [i["id"] for i in merged["images"]] == [1, 2]
    assert {x["image_id"] for x in merged["annotations"]} == {1, 2}
    assert [x["id"] for x in merged["annotations"]] == list(range(1, len(merged["annotations"]) + 1))
