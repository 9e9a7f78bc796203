"""Classes are identified by index, not name: two classes sharing a name both reach the per-image JSON and the
COCO file (a classes.txt or an export may list a name twice; keyed by name, one of them vanished)."""

from __future__ import annotations

import json

import numpy as np

from fcnseg.coco_results import CocoResults
from fcnseg.outputs import result_record
from fcnseg.predict import SegmentationResult

MASK = np.array([[0, 1, 1, 1], [2, 2, 0, 0]], np.uint8)  # class 1: 3 pixels, class 2: 2, class 0: 3
NAMES = ["background", "car", "car"]


def test_per_image_json_keeps_both_classes():
    record = json.loads(json.dumps(result_record(SegmentationResult(MASK, NAMES), input="a.png")))
    got = [(c["index"], c["name"], c["pixels"]) for c in record["classes"]]
    assert got == [(0, "background", 3), (1, "car", 3), (2, "car", 2)]  # largest first, ties by index
    assert sum(c["share"] for c in record["classes"]) == 1.0


def test_coco_output_has_an_annotation_and_a_category_per_class():
    from pycocotools import mask as coco_mask

    results = CocoResults()
    confidence = np.where(MASK == 1, 0.75, 0.5).astype(np.float32)  # the scores: each class's mean probability
    results.add("a.png", SegmentationResult(MASK, NAMES, confidence=confidence))
    doc = results.document()
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [(1, "car"), (2, "car")]
    by_class = {a["category_id"]: a for a in doc["annotations"]}
    assert sorted(by_class) == [1, 2]
    assert (by_class[1]["score"], by_class[2]["score"]) == (0.75, 0.5)
    for c, a in by_class.items():
        rle = {**a["segmentation"], "counts": a["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(coco_mask.decode(rle), (c == MASK).astype(np.uint8))
