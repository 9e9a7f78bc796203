"""The accuracy guard: a fast path becomes a default only if its argmax agrees with fp32 eager's on real photos.

The photos ship with the package (``fcnseg/assets``, see its README for their sources and licences), so the guard
needs nothing beyond fcnseg itself at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "CALIBRATION_PHOTOS",
    "GUARD_AGREEMENT",
    "GUARD_PHOTOS",
    "GuardResult",
    "accuracy_guard",
    "calibration_photos",
    "pick_fastest",
    "sample_photos",
]

Forward = Callable[[Tensor], Tensor]
GUARD_AGREEMENT = 0.995  # argmax agreement below this never becomes a default
GUARD_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CALIBRATION_PHOTOS = ("hubble_deep_field", "retina", "immunohistochemistry")  # int8's, never the guard's


@dataclass(frozen=True)
class GuardResult:
    """How a path's logits compare with fp32 eager's over some images."""

    agreement: float  # share of pixels whose argmax class is the same
    mean_abs_diff: float  # mean |Δlogit|
    max_abs_diff: float
    threshold: float = GUARD_AGREEMENT

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold


def sample_photos(size: int = 520, names: Sequence[str] = GUARD_PHOTOS) -> list[Tensor]:
    """The guard's photos (``fcnseg/assets``) through the inference preset (shorter side ``size``): (1, 3, h, w)."""
    from ..transforms import SemanticSegmentation

    preset = SemanticSegmentation(resize_size=size)
    folder = resources.files("fcnseg") / "assets"
    photos = []
    for name in names:
        with Image.open(folder / f"{name}.jpg") as image:  # type: ignore[arg-type]
            photos.append(preset(image.convert("RGB"))[None])
    return photos


def calibration_photos(size: int = 384) -> list[Tensor]:
    """int8's default calibration images: photos other than the guard's, so that the guard judges int8 on images
    its activation ranges were not fitted to."""
    return sample_photos(size, CALIBRATION_PHOTOS)


def photos_shaped(shape: torch.Size, device: torch.device) -> list[Tensor]:
    """One (N, 3, H, W) batch of the guard's photos, each scaled to cover H x W and cropped to it."""
    n, _, h, w = shape
    photos = sample_photos(max(h, w))
    batch = torch.cat([photos[i % len(photos)][..., :h, :w] for i in range(n)])
    return [batch.to(device)]


def accuracy_guard(
    fast: Forward, reference: Forward, images: Sequence[Tensor], threshold: float = GUARD_AGREEMENT
) -> GuardResult:
    """Compare ``fast`` with ``reference`` (fp32 eager) on ``images``: argmax agreement and |Δlogit|."""
    same = total = 0
    abs_sum, abs_max = 0.0, 0.0
    with torch.inference_mode():
        for x in images:
            ref, out = reference(x).float().cpu(), fast(x).float().cpu()
            diff = (out - ref).abs()
            same += int((out.argmax(1) == ref.argmax(1)).sum())
            total += ref[:, 0].numel()
            abs_sum += float(diff.sum()) / ref.shape[1]
            abs_max = max(abs_max, float(diff.max()))
    return GuardResult(agreement=same / total, mean_abs_diff=abs_sum / total, max_abs_diff=abs_max, threshold=threshold)


def pick_fastest(latency: dict[str, float], guard: dict[str, GuardResult]) -> str:
    """The name with the lowest latency among those whose guard passed; ``"none"`` (the reference) otherwise."""
    passing = [name for name in latency if name == "none" or (name in guard and guard[name].passed)]
    return min(passing, key=latency.__getitem__) if passing else "none"
