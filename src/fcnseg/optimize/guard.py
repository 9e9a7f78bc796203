"""The accuracy guard: a fast path becomes a default only if its argmax agrees with fp32 eager's on real photos.

The photos ship with the package (``fcnseg/assets``, see its README for their sources and licences), so the guard
needs nothing beyond fcnseg itself at run time.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources

import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "CALIBRATION_PHOTOS",
    "CLASS_MIN_SHARE",
    "GUARD_AGREEMENT",
    "IMAGE_AGREEMENT",
    "GUARD_PHOTOS",
    "MIN_IMAGES",
    "MIN_PIXELS",
    "MAX_PADDING",
    "GuardResult",
    "accuracy_guard",
    "calibration_photos",
    "compare_logits",
    "padding",
    "padding_count",
    "pick_fastest",
    "sample_photos",
    "size_class",
]

Forward = Callable[[Tensor], Tensor]
# argmax agreement over all guard images below this never becomes a default; measured (benchmarks/bench_guard.py):
# paths at >= 99.8 % changed mIoU against ground truth by <= 0.08 points, at 99.66-99.73 % by 0.15-0.22 points
GUARD_AGREEMENT = 0.998
IMAGE_AGREEMENT = 0.98  # ... nor below this on any one image
CLASS_MIN_SHARE = 0.002  # a class covering this share of an image in fp32's answer must not vanish from it
GUARD_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CALIBRATION_PHOTOS = ("hubble_deep_field", "retina", "immunohistochemistry")  # int8's, never the guard's
# A verdict needs this many images and pixels at the size the model sees; the user's images count first, bundled
# photos at the same size make up the rest. One 8x8 image is 64 pixels: a path that flips 1 pixel in 300 passes it.
MIN_IMAGES = 4
MIN_PIXELS = 2**16
MAX_PADDING = 256  # bundled crops at most (tiny images: 256 of 8x8 are 16384 pixels, the most judged at that size)


@dataclass(frozen=True)
class GuardResult:
    """How a path's logits compare with fp32 eager's over some images, and whether that is good enough.

    A path passes when (1) the argmax agrees on at least ``threshold`` of all pixels, (2) on at least
    :data:`IMAGE_AGREEMENT` of every single image's pixels, so that a few large images cannot hide one ruined
    small one, and (3) no class that covers at least :data:`CLASS_MIN_SHARE` of an image in fp32's answer
    vanishes from the path's answer for that image. ``on`` says which images were measured.
    """

    same: int  # pixels whose argmax class is the same
    total: int
    per_image: tuple[float, ...]  # agreement of each image
    vanished: tuple[int, ...] = ()  # classes fp32 found in an image that the path lost there
    mean_abs_diff: float = 0.0  # mean |Δlogit|
    max_abs_diff: float = 0.0
    on: str = ""
    threshold: float = GUARD_AGREEMENT

    @property
    def agreement(self) -> float:
        return self.same / self.total if self.total else 1.0

    @property
    def passed(self) -> bool:
        worst = min(self.per_image, default=1.0)
        return self.agreement >= self.threshold and worst >= IMAGE_AGREEMENT and not self.vanished

    def __add__(self, other: GuardResult) -> GuardResult:
        """Both sets of images pooled (the threshold is this one's)."""
        total = self.total + other.total
        mean = (self.mean_abs_diff * self.total + other.mean_abs_diff * other.total) / total if total else 0.0
        on = " + ".join(x for x in (self.on, other.on) if x)
        return GuardResult(
            self.same + other.same,
            total,
            self.per_image + other.per_image,
            tuple(sorted(set(self.vanished) | set(other.vanished))),
            mean,
            max(self.max_abs_diff, other.max_abs_diff),
            on,
            self.threshold,
        )

    def summary(self) -> str:
        """``99.91% agreement (min 99.62%, sd 0.12% over 5 images: ...)``, plus any class that vanished."""
        spread = statistics.pstdev(self.per_image) if self.per_image else 0.0
        line = f"{self.agreement:.2%} agreement (min {min(self.per_image, default=1.0):.2%}, sd {spread:.2%}"
        line += f" over {len(self.per_image)} images{': ' + self.on if self.on else ''})"
        if self.vanished:
            line += f", class {', '.join(map(str, self.vanished))} vanished"
        return line

    def to_json(self) -> dict:
        return {**asdict(self), "per_image": list(self.per_image), "vanished": list(self.vanished)}

    @classmethod
    def from_json(cls, data: dict) -> GuardResult:
        return cls(**{**data, "per_image": tuple(data["per_image"]), "vanished": tuple(data["vanished"])})


def compare_logits(out: Tensor, ref: Tensor, on: str = "", threshold: float = GUARD_AGREEMENT) -> GuardResult:
    """Compare a path's (N, K, H, W) logits with fp32 eager's, image by image."""
    out, ref = out.float().cpu(), ref.float().cpu()
    a, b = out.argmax(1), ref.argmax(1)  # (N, H, W)
    pixels = b[0].numel()
    per_image, vanished = [], set()
    for got, want in zip(a, b, strict=True):
        per_image.append(float((got == want).sum()) / pixels)
        counts = torch.bincount(want.flatten(), minlength=out.shape[1])
        present = (counts >= CLASS_MIN_SHARE * pixels).nonzero().flatten().tolist()
        vanished |= {c for c in present if not bool((got == c).any())}
    diff = (out - ref).abs()
    return GuardResult(
        same=int((a == b).sum()),
        total=b.numel(),
        per_image=tuple(per_image),
        vanished=tuple(sorted(vanished)),
        mean_abs_diff=float(diff.mean()),
        max_abs_diff=float(diff.max()),
        on=on,
        threshold=threshold,
    )


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


def size_class(shape: Sequence[int]) -> int:
    """Input sizes within a factor of 4 in pixels share a class; a path judged on one class is judged again on
    another (int8 that agrees on 8x8 images can lose pixels on 144x112 ones)."""
    h, w = shape[-2:]
    return (max(h * w, 1).bit_length() - 1) // 2  # [4^k, 4^(k+1)) pixels: 520 x 520 to 520 x 2000 is one class


def padding_count(shape: Sequence[int], images: int, pixels: int) -> int:
    """How many bundled crops :func:`padding` adds: whole batches of the user's batch size."""
    n, _, h, w = shape
    need = max(MIN_IMAGES - images, -(-(MIN_PIXELS - pixels) // (h * w)), 0)
    return min(-(-need // n) * n, MAX_PADDING // n * n or n)


def padding(shape: Sequence[int], images: int, pixels: int) -> list[Tensor]:
    """Batches of ``shape`` (N, 3, H, W) cut from the bundled photos at that size, enough to bring a sample of
    ``images`` images and ``pixels`` pixels up to :data:`MIN_IMAGES` and :data:`MIN_PIXELS` (at most
    :data:`MAX_PADDING` crops). Crops come from each photo scaled to cover H x W at 1x, 2x, 4x... its size, on a
    grid, so that tiny inputs see many different views rather than one photo repeated."""
    n, _, h, w = shape
    need = padding_count(shape, images, pixels)
    crops: list[Tensor] = []
    scale = 1
    while len(crops) < need and scale <= 64:
        for photo in sample_photos(max(h, w) * scale):
            ph, pw = photo.shape[-2:]
            grid = [(y, x) for y in range(0, ph - h + 1, h) for x in range(0, pw - w + 1, w)]
            crops += [photo[..., y : y + h, x : x + w] for y, x in grid]
        scale *= 2
    crops = crops[:need]
    return [torch.cat(crops[i : i + n]) for i in range(0, len(crops) - n + 1, n)]


def accuracy_guard(
    fast: Forward, reference: Forward, images: Sequence[Tensor], threshold: float = GUARD_AGREEMENT, on: str = ""
) -> GuardResult:
    """Compare ``fast`` with ``reference`` (fp32 eager) on ``images`` (normalized batches): see :class:`GuardResult`."""
    with torch.inference_mode():
        results = [compare_logits(fast(x), reference(x), threshold=threshold) for x in images]
    pooled = sum(results[1:], results[0])
    return replace(pooled, on=on)


def pick_fastest(latency: dict[str, float], guard: dict[str, GuardResult]) -> str:
    """The name with the lowest latency among those whose guard passed; ``"none"`` (the reference) otherwise."""
    passing = [name for name in latency if name == "none" or (name in guard and guard[name].passed)]
    return min(passing, key=latency.__getitem__) if passing else "none"
