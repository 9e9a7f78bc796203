"""Pre- and post-processing shared by every entry point: image -> normalized tensor, labels -> colours.

One implementation of each step, so the CLI, the Python API, the server, evaluation and export agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = [
    "captioned",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageLike",
    "SegmentationEval",
    "SegmentationTrain",
    "SemanticSegmentation",
    "label_to_image",
    "normalize",
    "overlay",
    "palette",
    "resize_shorter_side",
    "resized_size",
    "to_uint8_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Image.Image | np.ndarray | Tensor


def to_uint8_tensor(image: ImageLike) -> Tensor:
    """Any RGB image (PIL, HxWx3 uint8 array, or 3xHxW tensor) as a 3xHxW uint8 tensor."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 array, got shape {image.shape} and dtype {image.dtype}")
        return torch.from_numpy(np.array(image, copy=True, order="C")).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3xHxW tensor, got shape {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return image
    raise TypeError(f"expected a PIL image, NumPy array or tensor, got {type(image).__name__}")


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (H, W) when the shorter side becomes ``size``; same truncation as torchvision.

    ``size * short / short`` is exactly ``size`` in float arithmetic, so one formula serves both sides, with no
    branch on which side is shorter: that keeps it traceable with symbolic sizes (the ONNX export resizes inside).
    """
    short = torch.sym_min(height, width)
    return torch.sym_int(size * height / short), torch.sym_int(size * width / short)


def _pil_nearest_index(n_in: int, n_out: int) -> Tensor:
    """Source index of each output pixel exactly as PIL's NEAREST resize picks it.

    PIL samples at pixel centres, accumulating the step in float64 and truncating; torch's ``nearest`` and
    ``nearest-exact`` modes disagree with it on some rows, which would shift label-map boundaries.
    """
    step = n_in / n_out
    pos = np.add.accumulate(np.r_[step * 0.5, np.full(n_out - 1, step)])
    return torch.from_numpy(pos.astype(np.int64).clip(0, n_in - 1))


def resize_shorter_side(x: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Resize a (..., H, W) tensor so its shorter side is ``size``.

    Bilinear resizing is antialiased (like PIL and torchvision); ``nearest`` is for label maps and picks
    the same pixels as PIL's NEAREST (what the torchvision references use on PIL masks), keeping the dtype.
    """
    h, w = x.shape[-2:]
    out_hw = resized_size(h, w, size)
    if out_hw == (h, w):
        return x
    if mode == "nearest":
        rows, cols = _pil_nearest_index(h, out_hw[0]), _pil_nearest_index(w, out_hw[1])
        return x.index_select(-2, rows.to(x.device)).index_select(-1, cols.to(x.device))
    batched = x if x.ndim == 4 else x[None]
    out = F.interpolate(batched.float(), size=out_hw, mode="bilinear", align_corners=False, antialias=True)
    return out if x.ndim == 4 else out[0]


def normalize(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 or [0, 1] float (..., 3, H, W) -> ImageNet-normalized float32."""
    if x.dtype == torch.uint8:
        x = x.float() / 255
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


class SemanticSegmentation:
    """The evaluation/inference preset of the official weights: shorter side to ``resize_size``, then normalize.

    ``resize_size=None`` keeps the native resolution. Returns a float32 3xHxW tensor.
    """

    def __init__(
        self,
        *,
        resize_size: int | None = 520,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.resize_size = resize_size
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: ImageLike) -> Tensor:
        x = to_uint8_tensor(image)
        if self.resize_size is not None:
            x = resize_shorter_side(x.float(), self.resize_size).round_().clamp_(0, 255) / 255
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return f"SemanticSegmentation(resize_size={self.resize_size}, mean={self.mean}, std={self.std})"


class SegmentationEval:
    """The evaluation preset on (image, mask) pairs, as torchvision's ``SegmentationPresetEval``.

    The image goes through :class:`SemanticSegmentation` (shorter side to ``resize_size``, antialiased bilinear,
    normalized); the mask is resized with PIL-exact nearest so labels are never blended. ``resize_size=None`` keeps
    both at native resolution; ``resize_mask=False`` resizes only the image, for scoring at the mask's native
    resolution (the logits are then upsampled to it). Returns ``(float32 3xHxW, int64 HxW)``.

    The reference resizes PIL images; the shared tensor resize used here lands within one uint8 level of PIL's
    (PIL rounds in fixed point), and the mask pixels are exactly PIL's.
    """

    def __init__(
        self,
        *,
        resize_size: int | None = 520,
        resize_mask: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.image = SemanticSegmentation(resize_size=resize_size, mean=mean, std=std)
        self.resize_size = resize_size
        self.resize_mask = resize_mask

    def __call__(self, image: ImageLike, mask: Image.Image | np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        x = self.image(image)
        m = mask if isinstance(mask, Tensor) else torch.from_numpy(np.array(mask, dtype=np.int64))
        if m.ndim != 2:
            raise ValueError(f"expected an HxW mask, got shape {tuple(m.shape)}")
        image_hw = image.size[::-1] if isinstance(image, Image.Image) else tuple(to_uint8_tensor(image).shape[-2:])
        if tuple(m.shape) != image_hw:
            raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]} but its image is {image_hw[1]}x{image_hw[0]}")
        if self.resize_size is not None and self.resize_mask:
            m = resize_shorter_side(m, self.resize_size, mode="nearest")
        return x, m.long()

    def __repr__(self) -> str:
        return f"SegmentationEval(resize_size={self.resize_size}, resize_mask={self.resize_mask})"


def palette(num_classes: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: class i's colour spreads i's bits over the channels, high bits first.

    Bits 0, 1, 2 of i set the top bit (128) of red, green, blue; bits 3, 4, 5 the next (64); bits 6, 7 the next
    (32). Neighbouring classes (i, i+1) therefore differ by 128 in some channel, for any class count, and
    the 21 VOC classes get the colours of VOC's own mask PNGs (255, VOC's void, is (224, 224, 192)).
    Returns a (num_classes, 3) uint8 array; entry i is the colour of class i (class 0 black).
    """
    i = np.arange(num_classes, dtype=np.int64)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(8):  # bit 3 * shift + channel of i -> bit (7 - shift) of that channel
        for channel in range(3):
            colours[:, channel] |= ((i >> (3 * shift + channel)) & 1) << (7 - shift)
    return colours.astype(np.uint8)


def label_to_image(mask: np.ndarray | Tensor, colors: np.ndarray | None = None) -> Image.Image:
    """An HxW class-index map as a palette-mode ("P") PIL image: lossless indices, coloured when viewed."""
    mask = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW label map, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("label values must lie in 0..255 to fit a palette PNG")
    img = Image.fromarray(mask.astype(np.uint8))  # mode "L"; putpalette turns it into "P"
    table = palette(256) if colors is None else np.asarray(colors, dtype=np.uint8)
    img.putpalette(table.reshape(-1).tolist())  # a flat list of ints, which every Pillow accepts
    return img


def captioned(image: Image.Image, text: str) -> Image.Image:
    """``image`` with ``text`` in a black band across its top (about 1/12 of the height, at least 10 pixels; white
    letters, smaller if the width asks), so that nobody takes the picture for what it is not. A copy, of the same
    size."""
    out = image.copy()
    band = min(out.height, max(10, out.height // 12))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width, band - 1), fill=(0, 0, 0))
    size = band * 3 // 4
    room = out.width - band // 2  # a margin of band / 4 each side
    size = max(6, min(size, int(size * room / ImageFont.load_default(size=size).getlength(text))))  # fit the width
    font = ImageFont.load_default(size=size)
    draw.text((band // 4, band // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    return out


def overlay(image: ImageLike, mask: np.ndarray | Tensor, alpha: float = 0.5, background: int | None = 0) -> Image.Image:
    """Blend class colours over the image; pixels of class ``background`` keep the photo as is.

    In 8.8 fixed point (``alpha`` to 1/256, within one level of the float blend): a folder run blends each photo
    beside the model, and integer arithmetic costs a fraction of float32's.
    """
    rgb = to_uint8_tensor(image).permute(1, 2, 0).numpy()
    mask = (mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)).astype(np.uint8, copy=False)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {rgb.shape[:2]}")
    w = round(min(max(alpha, 0.0), 1.0) * 256)
    colour = palette(256)[mask].astype(np.uint16)
    out = ((rgb.astype(np.uint16) * (256 - w) + colour * w + 128) >> 8).astype(np.uint8)
    if background is not None:
        keep = mask == background
        out[keep] = rgb[keep]
    return Image.fromarray(out)


class SegmentationTrain:
    """The reference training augmentation for an (image, mask) pair, as torchvision's ``SegmentationPresetTrain``.

    Shorter side resized to a random size in [0.5, 2.0] x ``base_size`` (bilinear image, nearest mask), horizontal
    flip with ``hflip_prob``, a random ``crop_size`` square crop (smaller pairs are padded at the bottom/right: image
    with 0, mask with ``ignore_index``), then ImageNet normalization. Returns (float32 3xHxW, int64 HxW).

    All randomness comes from ``generator``, so a sample's augmentation can be made a function of (seed, epoch,
    index): the same on any rank, with any number of loader workers, and after resuming a run.
    """

    def __init__(
        self,
        *,
        base_size: int = 520,
        crop_size: int = 480,
        hflip_prob: float = 0.5,
        ignore_index: int = 255,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.min_size, self.max_size = int(0.5 * base_size), int(2.0 * base_size)
        self.crop_size = crop_size
        self.hflip_prob = hflip_prob
        self.ignore_index = ignore_index
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(
        self, image: ImageLike, mask: Image.Image | np.ndarray | Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x = to_uint8_tensor(image)  # (3, H, W)
        m = torch.as_tensor(np.array(mask, dtype=np.uint8, copy=True))  # (H, W)
        if x.shape[1:] != m.shape:
            raise ValueError(f"image size {tuple(x.shape[1:])} and mask size {tuple(m.shape)} differ")

        size = int(torch.randint(self.min_size, self.max_size + 1, (1,), generator=generator))
        x = resize_shorter_side(x.float(), size).round_().clamp_(0, 255).to(torch.uint8)
        m = resize_shorter_side(m[None], size, mode="nearest")[0]
        if torch.rand(1, generator=generator).item() < self.hflip_prob:
            x, m = x.flip(-1), m.flip(-1)

        c = self.crop_size
        pad_h, pad_w = max(c - m.shape[0], 0), max(c - m.shape[1], 0)
        if pad_h or pad_w:  # (left, right, top, bottom) on the last two dims
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0)
            m = F.pad(m.long(), (0, pad_w, 0, pad_h), value=self.ignore_index)  # int64: -1 fits, uint8 has no room
        top = int(torch.randint(0, m.shape[0] - c + 1, (1,), generator=generator))
        left = int(torch.randint(0, m.shape[1] - c + 1, (1,), generator=generator))
        x, m = x[:, top : top + c, left : left + c], m[top : top + c, left : left + c]
        return normalize(x, self.mean, self.std), m.long()

    def __repr__(self) -> str:
        return (
            f"SegmentationTrain(resize=[{self.min_size}, {self.max_size}], crop_size={self.crop_size}, "
            f"hflip_prob={self.hflip_prob}, ignore_index={self.ignore_index})"
        )
