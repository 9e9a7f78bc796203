"""The server's ``classes`` lists every class present, by index, even when two classes share a name."""

from __future__ import annotations

import numpy as np

from fcnseg.predict import SegmentationResult
from fcnseg.serve import create_app

NAMES = ["background", "car", "car"]


class ThirdsSegmenter:
    """Labels the left third of any image 1, the middle third 2, the rest 0: a known answer at every size."""

    categories = NAMES
    model_name = "thirds"

    def predict_batch(self, images):
        out = []
        for image in images:
            mask = np.zeros((image.height, image.width), np.uint8)
            mask[:, : image.width // 3] = 1
            mask[:, image.width // 3 : 2 * image.width // 3] = 2
            out.append(SegmentationResult(mask, NAMES))
        return out


def test_two_classes_named_alike_are_two_entries(helpers):
    photo = helpers.encode(helpers.make_image(0, (30, 10)))
    with helpers.client(create_app(ThirdsSegmenter(), config=helpers.config(), model_info={"weights": None})) as c:
        r = c.post("/v1/segment", files={"file": ("p.png", photo, "image/png")})
    assert r.status_code == 200, r.text
    got = sorted((k["index"], k["name"], k["pixels"]) for k in r.json()["classes"])
    assert got == [(0, "background", 100), (1, "car", 100), (2, "car", 100)]
