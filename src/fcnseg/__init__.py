"""fcnseg: FCN semantic segmentation in pure PyTorch, compatible with torchvision's checkpoints.

The public names are imported on first use (:mod:`fcnseg._lazy`), so that ``fcnseg --help`` does not wait for
torch; ``from fcnseg import Segmenter`` works as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:
    from .models import fcn_resnet50, fcn_resnet101, get_model, get_model_weights, list_models
    from .predict import SegmentationResult, Segmenter
    from .weights import FCN_ResNet50_Weights, FCN_ResNet101_Weights, ResNet50_Weights, ResNet101_Weights

__version__ = "0.1.0"

__all__ = [
    "FCN_ResNet50_Weights",
    "FCN_ResNet101_Weights",
    "ResNet50_Weights",
    "ResNet101_Weights",
    "SegmentationResult",
    "Segmenter",
    "__version__",
    "fcn_resnet50",
    "fcn_resnet101",
    "get_model",
    "get_model_weights",
    "list_models",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        **dict.fromkeys(["fcn_resnet50", "fcn_resnet101", "get_model", "get_model_weights", "list_models"], ".models"),
        **dict.fromkeys(["SegmentationResult", "Segmenter"], ".predict"),
        **dict.fromkeys(
            ["FCN_ResNet50_Weights", "FCN_ResNet101_Weights", "ResNet50_Weights", "ResNet101_Weights"], ".weights"
        ),
    },
)
