"""Class names of the datasets fcnseg reads by name: data about the datasets, shared with the weights trained on
them (:mod:`fcnseg.weights` takes its category lists from here, so datasets never import the weights registry)."""

from __future__ import annotations

__all__ = ["VOC_CATEGORIES"]

# Pascal VOC 2012's 20 classes after the background, in the order of their label values (and of torchvision's).
VOC_CATEGORIES = [
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
