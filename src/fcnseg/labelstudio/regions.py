"""A segmentation as Label Studio regions: a brush region per class, or a polygon per connected piece.

``BrushLabels`` regions carry the class's pixels as Label Studio's brush RLE (:mod:`fcnseg.data.brush`), exact.
``PolygonLabels`` regions are the outer contour of each 8-connected piece of a class, simplified (Douglas-Peucker,
``tolerance`` pixels) and in percent of the image's width and height, as Label Studio stores points; holes are
filled, since a Label Studio polygon has none, and pieces too small to give a polygon of 3 points are left out.
A region's ``score`` is the mean probability the model gave its class over the region's pixels; the prediction's
``score`` is ``1 - doubt`` (``result.doubt()``, the image's mean normalised pixel entropy), so Label Studio's
*prediction score* ordering puts the model's most doubtful images first, as ``fcnseg rank`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..data.brush import encode_brush_rle
from .config import LabelConfig, Tool

__all__ = ["POLYGON_TOLERANCE", "brush_regions", "polygon_regions", "prediction"]

POLYGON_TOLERANCE = 1.0  # pixels a simplified contour may stray from the traced one


def _region(tool: Tool, kind_value: dict[str, Any], label: str, score: float, shape: tuple[int, int], rid: str):
    h, w = shape
    key = "brushlabels" if tool.kind == "brush" else "polygonlabels"
    return {
        "id": rid, "from_name": tool.name, "to_name": tool.to_name, "type": key,
        "original_width": w, "original_height": h, "image_rotation": 0,
        "value": {**kind_value, key: [label]}, "score": round(float(score), 6),
    }  # fmt: skip


def brush_regions(tool: Tool, mask: np.ndarray, confidence: np.ndarray) -> list[dict[str, Any]]:
    """One brush region per class of ``tool`` present in ``mask`` (H, W), largest first."""
    counts = np.bincount(mask.ravel(), minlength=256)
    sums = np.bincount(mask.ravel(), weights=confidence.ravel(), minlength=256)
    regions = []
    for index in sorted(tool.labels, key=lambda i: -counts[i]):
        if counts[index]:
            rle = encode_brush_rle((mask == index).astype(np.uint8) * 255)
            score = sums[index] / counts[index]
            regions.append(_region(tool, {"format": "rle", "rle": rle}, tool.labels[index], score, mask.shape,
                                   f"{tool.name}-{index}"))  # fmt: skip
    return regions


def polygon_regions(
    tool: Tool, mask: np.ndarray, confidence: np.ndarray, tolerance: float = POLYGON_TOLERANCE
) -> list[dict[str, Any]]:
    """One polygon region per 8-connected piece of each class of ``tool`` present in ``mask`` (H, W)."""
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    h, w = mask.shape
    regions = []
    for index, label in tool.labels.items():
        pieces, n = ndimage.label(mask == index, structure=np.ones((3, 3), bool))
        for k, box in enumerate(ndimage.find_objects(pieces), start=1):
            piece = np.pad(ndimage.binary_fill_holes(pieces[box] == k), 1)
            # (row, col) in the padded crop; 8-connected like the pieces, so diagonal steps stay one outline
            contour = max(find_contours(piece.astype(np.float32), 0.5, fully_connected="high"), key=len)
            points = approximate_polygon(contour, tolerance)[:-1]  # closed: the last point repeats the first
            if len(points) < 3:
                continue
            y = (points[:, 0] - 1 + box[0].start + 0.5) / h * 100
            x = (points[:, 1] - 1 + box[1].start + 0.5) / w * 100
            xy = np.clip(np.stack([x, y], 1), 0, 100).round(4).tolist()
            score = confidence[box][pieces[box] == k].mean()
            regions.append(_region(tool, {"points": xy, "closed": True}, label, score, mask.shape,
                                   f"{tool.name}-{index}-{k}"))  # fmt: skip
    return regions


def prediction(config: LabelConfig, results: Mapping[str, Any], model_version: str | None) -> dict[str, Any]:
    """Label Studio's prediction for one task: ``results`` (by task data key, each a
    :class:`fcnseg.results.SegmentationResult` with confidence) as regions for every tool of ``config``, the
    task's score (``1 - doubt``, averaged over its images) and ``model_version``."""
    regions = []
    for tool in config.tools:
        result = results[tool.data_key]
        convert = brush_regions if tool.kind == "brush" else polygon_regions
        regions += convert(tool, result.mask, result.confidence)
    doubt = sum(r.doubt() for r in results.values()) / max(len(results), 1)
    return {"result": regions, "score": round(1.0 - doubt, 6), "model_version": model_version}
