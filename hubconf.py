"""torch.hub entry points: ``torch.hub.load("<owner>/fcnseg", "fcn_resnet50", pretrained=True)``.

A checkout works too: ``torch.hub.load(path, "fcn_resnet50", pretrained=True, source="local")``, and so does a
checkpoint ``fcnseg train`` wrote, with or without its aux head: ``torch.hub.load(..., weights="runs/x/best.pth")``.
"""

import os
import sys

dependencies = ["torch", "numpy", "PIL"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from fcnseg.models import fcn_resnet50, fcn_resnet101  # noqa: E402

__all__ = ["fcn_resnet50", "fcn_resnet101"]
