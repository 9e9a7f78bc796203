"""Our brush RLE as Label Studio stores it: a prediction imported through its API reads back as the same mask."""

from __future__ import annotations

import numpy as np
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

from fcnseg.data.brush import encode_brush_rle

BRUSH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Thing"/><Label value="Stuff"/></BrushLabels>
</View>"""


def test_brush_prediction_round_trip(label_studio):
    h, w = 37, 53  # odd sizes
    masks = {"Thing": np.zeros((h, w), np.uint8), "Stuff": np.zeros((h, w), np.uint8)}
    masks["Thing"][5:20, 7:30] = 255
    masks["Stuff"][36, 52] = 255  # one pixel, the last one
    result = [
        {
            "from_name": "tag", "to_name": "image", "type": "brushlabels", "original_width": w, "original_height": h,
            "image_rotation": 0, "value": {"format": "rle", "rle": encode_brush_rle(m), "brushlabels": [name]},
        }
        for name, m in masks.items()
    ]  # fmt: skip
    prediction = {"model_version": "test", "score": 0.5, "result": result}
    assert LabelInterface(BRUSH_CONFIG).validate_prediction(prediction, return_errors=True) == []

    project = label_studio.create_project("brush round trip", BRUSH_CONFIG)
    label_studio.api(
        "POST", f"/api/projects/{project}/import", json=[{"data": {"image": "/x.png"}, "predictions": [prediction]}]
    )
    (task,) = label_studio.tasks(project)
    (stored,) = task["predictions"]
    assert stored["score"] == 0.5 and stored["model_version"] == "test"
    for region in stored["result"]:
        (name,) = region["value"]["brushlabels"]
        alpha = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
        assert np.array_equal(alpha, masks[name])
