"""The server's JSON gives each class present its pixels as COCO compressed RLE, decodable by pycocotools."""

from __future__ import annotations

import numpy as np

from fcnseg.serve import create_app


def test_each_class_carries_its_coco_rle(segmenter, helpers):
    from pycocotools import mask as coco_mask

    image = helpers.make_image(2, (40, 24))
    expected = segmenter.predict(image).mask
    with helpers.client(create_app(segmenter, config=helpers.config(), model_info={"weights": None})) as client:
        r = client.post("/v1/segment", files={"file": ("p.png", helpers.encode(image), "image/png")})
    assert r.status_code == 200
    classes = r.json()["classes"]
    assert classes
    for c in classes:
        rle = c["segmentation"]
        assert rle["size"] == [24, 40] and isinstance(rle["counts"], str)
        decoded = coco_mask.decode({**rle, "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, (expected == c["index"]).astype(np.uint8))
