"""fcnseg: FCN semantic segmentation in pure PyTorch, compatible with torchvision's checkpoints."""

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
