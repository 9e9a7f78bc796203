"""Images in, label maps out: the :class:`Segmenter` API used by the CLI, the server and the examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .distributed import select_device
from .imageio import load_image
from .models import get_model, get_model_weights
from .optimize import SpeedPlan
from .optimize import optimize as _optimize
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ImageLike, SemanticSegmentation, label_to_image, overlay
from .weights import VOC_CATEGORIES, WeightsEnum, read_checkpoint

__all__ = ["SegmentationResult", "Segmenter", "postprocess"]


def postprocess(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, K, h, w) logits -> (N, K, H, W) at the original image size (bilinear, like the model's own upsampling)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@dataclass
class SegmentationResult:
    """One image's prediction: ``mask`` (H, W) uint8 class indices at the input's size."""

    mask: np.ndarray
    categories: list[str]
    probs: np.ndarray | None = None  # (K, H, W) float32 softmax, when asked for
    confidence: np.ndarray | None = None  # (H, W) float32 probability of the chosen class
    image: Image.Image | None = field(default=None, repr=False)

    def to_image(self) -> Image.Image:
        """The mask as a palette PNG-ready PIL image (indices kept, seed colours)."""
        return label_to_image(self.mask)

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        if self.image is None:
            raise ValueError("this result holds no image to overlay on")
        return overlay(self.image, self.mask, alpha)

    def class_areas(self) -> dict[str, float]:
        """Share of the image's pixels per class present, largest first."""
        counts = np.bincount(self.mask.reshape(-1), minlength=len(self.categories))
        total = max(int(self.mask.size), 1)
        order = np.argsort(-counts, kind="stable")
        return {self.categories[i]: counts[i] / total for i in order if counts[i] > 0}


class Segmenter:
    """A model plus its preprocessing, ready to segment images.

    Args:
        model: a model name (``"fcn_resnet50"``) or an ``nn.Module`` returning ``{"out": logits}``.
        weights: weights name (``"DEFAULT"``), enum member, checkpoint path, or None (random init).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        size: shorter side the image is resized to before the model (the weights' 520), or None for native.
        categories: class names; taken from the weights or checkpoint when not given.
        optimize: how the model runs (:mod:`fcnseg.optimize`): ``"none"`` plain fp32 eager, ``"auto"`` the fastest
            path for this device that passes the accuracy guard, a path name (``"bf16"``, ``"int8"``...) or a plan.
    """

    def __init__(
        self,
        model: str | nn.Module = "fcn_resnet50",
        weights: str | Path | WeightsEnum | None = "DEFAULT",
        *,
        device: str | torch.device = "auto",
        size: int | None = 520,
        categories: Sequence[str] | None = None,
        optimize: str | SpeedPlan = "none",
    ) -> None:
        self.device = select_device(str(device))
        if isinstance(model, str):
            self.model_name = model
            net = get_model(model, weights=weights, aux_loss=False)
            if categories is None:
                categories = _categories(model, weights)
        else:
            self.model_name, net = type(model).__name__, model
        self.model = net.eval().to(self.device)
        n = self._num_classes()
        self.categories = list(categories) if categories is not None else _default_names(n)
        if len(self.categories) != n:
            raise ValueError(f"{len(self.categories)} category names given for a model with {n} classes")
        self._forward = _optimize(self.model, optimize)
        self.preprocess = SemanticSegmentation(resize_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def _num_classes(self) -> int:
        last = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        classifier = getattr(self.model, "classifier", None)
        conv = classifier[-1] if isinstance(classifier, nn.Sequential) else last[-1]
        return conv.out_channels

    @torch.inference_mode()
    def logits(self, batch: Tensor) -> Tensor:
        """Normalized (N, 3, h, w) batch -> (N, K, h, w) float32 logits."""
        return self._forward(batch.to(self.device)).float()

    def predict(self, image: ImageLike | str | Path, *, probs: bool = False) -> SegmentationResult:
        return self.predict_batch([image], probs=probs)[0]

    def predict_batch(
        self, images: Sequence[ImageLike | str | Path], *, probs: bool = False
    ) -> list[SegmentationResult]:
        """Segment several images; same-size inputs share one forward pass."""
        pils = [load_image(im) if isinstance(im, (str, Path)) else _as_pil(im) for im in images]
        results: list[SegmentationResult | None] = [None] * len(pils)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(pils):
            groups.setdefault(im.size, []).append(i)
        for (w, h), idx in groups.items():
            batch = torch.stack([self.preprocess(pils[i]) for i in idx])
            with torch.inference_mode():
                p = postprocess(self.logits(batch), (h, w)).softmax(1).cpu()
            conf, mask = p.max(1)
            for j, i in enumerate(idx):
                results[i] = SegmentationResult(
                    mask=mask[j].to(torch.uint8).numpy(),
                    categories=self.categories,
                    probs=p[j].numpy() if probs else None,
                    confidence=conf[j].numpy(),
                    image=pils[i],
                )
        return results  # type: ignore[return-value]


def _as_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from .transforms import to_uint8_tensor

    return Image.fromarray(to_uint8_tensor(image).permute(1, 2, 0).numpy())


def _default_names(n: int) -> list[str]:
    return VOC_CATEGORIES if n == len(VOC_CATEGORIES) else [f"class_{i}" for i in range(n)]


def _categories(model: str, weights: object) -> list[str] | None:
    if weights is None:
        return None
    if isinstance(weights, (str, Path)):
        enum = get_model_weights(model)
        name = str(weights).removeprefix(enum.__name__ + ".")
        if name in enum.__members__:
            return enum[name].meta["categories"]
        cats = read_checkpoint(weights)[1].get("categories")
        return list(cats) if cats else None
    return weights.meta["categories"]  # type: ignore[union-attr]
