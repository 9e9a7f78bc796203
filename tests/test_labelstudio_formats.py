"""Label Studio's formats without a server: the labelling config as fcnseg reads it, masks as regions (brush and
polygons), and the doubt that orders tasks."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image, ImageDraw

from fcnseg.labelstudio import parse_label_config, prediction
from fcnseg.labelstudio.regions import polygon_regions
from fcnseg.results import SegmentationResult

CATEGORIES = ["background", "car", "Tree", "road"]
CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <Choices name="weather" toName="img"><Choice value="sunny"/></Choices>
  <BrushLabels name="brush" toName="img">
    <Label value="CAR"/><Label value=" tree "/><Label value="Background"/><Label value="sky"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="img"><Label value="Car"/></PolygonLabels>
  <BrushLabels name="elsewhere" toName="missing"><Label value="road"/></BrushLabels>
</View>"""


def test_config_matches_labels_by_name_case_insensitively():
    config = parse_label_config(CONFIG, CATEGORIES)
    brush, poly = config.tools
    assert (brush.name, brush.kind, brush.to_name, brush.data_key) == ("brush", "brush", "img", "photo")
    assert brush.labels == {1: "CAR", 2: " tree "}  # the config's own spelling; background never a label
    assert (poly.kind, poly.labels) == ("polygon", {1: "Car"})
    assert config.unmatched == ("road",)  # named only by a tool on no image
    assert config.data_keys == ["photo"]


@pytest.mark.parametrize(
    ("xml", "why"),
    [
        ("<View><Image name='i' value='$x'/>", "not valid XML"),
        ("<View><Image name='i' value='$x'/><Choices name='c' toName='i'/></View>", "no <BrushLabels>"),
        ("<View><Image name='i' value='x'/><BrushLabels name='b' toName='i'/></View>", "no <BrushLabels>"),
    ],
)
def test_config_without_a_segmentation_tool_is_refused(xml, why):
    with pytest.raises(ValueError, match=why):
        parse_label_config(xml, CATEGORIES)


def _result(mask: np.ndarray, k: int = 4) -> SegmentationResult:
    """A result whose confidence is 0.75 everywhere and whose entropy is that of a uniform distribution."""
    h, w = mask.shape
    return SegmentationResult(mask, CATEGORIES[:k], confidence=np.full((h, w), 0.75, np.float32),
                              entropy=np.full((h, w), np.log(k), np.float32))  # fmt: skip


def test_prediction_brush_regions_and_scores():
    mask = np.zeros((9, 13), np.uint8)
    mask[1:4, 2:6], mask[5:9, 0:13], mask[0, 12] = 1, 2, 3  # car, tree, one pixel of road (no label)
    config = parse_label_config(CONFIG, CATEGORIES)
    pred = prediction(config, {"photo": _result(mask)}, "v1")
    assert LabelInterface(CONFIG).validate_prediction(pred, return_errors=True) == []
    assert pred["model_version"] == "v1" and pred["score"] == pytest.approx(0.0)  # uniform: all doubt
    brush = [r for r in pred["result"] if r["type"] == "brushlabels"]
    assert [r["value"]["brushlabels"] for r in brush] == [[" tree "], ["CAR"]]  # largest first
    for region, index in zip(brush, (2, 1), strict=True):
        alpha = decode_rle(region["value"]["rle"]).reshape(9, 13, 4)[:, :, 3]
        assert np.array_equal(alpha == 255, mask == index)
        assert region["score"] == pytest.approx(0.75)
        assert (region["original_width"], region["original_height"]) == (13, 9)
    assert len({r["id"] for r in pred["result"]}) == len(pred["result"])


def test_doubt_is_normalised_mean_entropy():
    mask = np.zeros((4, 4), np.uint8)
    assert _result(mask).doubt() == pytest.approx(1.0)
    sure = SegmentationResult(mask, CATEGORIES, entropy=np.zeros((4, 4), np.float32))
    assert sure.doubt() == 0.0
    with pytest.raises(ValueError, match="confidence=True"):
        SegmentationResult(mask, CATEGORIES).doubt()


def _rasterise(regions: list[dict], shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    canvas = Image.new("L", (w, h))
    for r in regions:
        ImageDraw.Draw(canvas).polygon([(x / 100 * w, y / 100 * h) for x, y in r["value"]["points"]], 1, 1)
    return np.array(canvas).astype(bool)


def test_polygons_outline_pieces_fill_holes_and_join_diagonals():
    mask = np.zeros((40, 50), np.uint8)
    mask[5:25, 5:25] = 1
    mask[12:18, 12:18] = 0  # a hole: a Label Studio polygon has none, so it is filled
    mask[30:35, 30:35] = 1
    mask[35:40, 35:40] = 1  # touches the block above at one corner: one 8-connected piece
    tool = parse_label_config(CONFIG, CATEGORIES).tools[1]
    regions = polygon_regions(tool, mask, np.full(mask.shape, 0.5, np.float32))
    assert len(regions) == 2
    assert all(0 <= v <= 100 for r in regions for point in r["value"]["points"] for v in point)
    filled = mask == 1
    filled[12:18, 12:18] = True
    drawn = _rasterise(regions, mask.shape)
    assert (drawn & filled).sum() / (drawn | filled).sum() > 0.9
    assert [r["score"] for r in regions] == [0.5, 0.5]
