"""Label Studio's side of the labelling loop: its labelling config, its regions (brush RLE, polygons) and its
task images, fetched safely. No model here: :mod:`fcnseg.serve.labelstudio` answers Label Studio's ML-backend
calls with these, and ``fcnseg rank`` writes its tasks."""

from .config import LabelConfig, Tool, parse_label_config
from .fetch import FetchError, ImageFetcher
from .regions import brush_regions, polygon_regions, prediction

__all__ = [
    "FetchError",
    "ImageFetcher",
    "LabelConfig",
    "Tool",
    "brush_regions",
    "parse_label_config",
    "polygon_regions",
    "prediction",
]
