"""The paired eval preset and the PIL-exact nearest resize used for masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.transforms import SegmentationEval, SemanticSegmentation, resize_shorter_side, resized_size


@pytest.mark.parametrize("seed", range(6))
def test_nearest_resize_picks_the_same_pixels_as_pil(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 300, 2)
    size = int(rng.integers(2, 600))
    labels = rng.integers(0, 256, (h, w)).astype(np.uint8)
    new_h, new_w = resized_size(h, w, size)
    expected = np.asarray(Image.fromarray(labels).resize((new_w, new_h), Image.NEAREST))
    out = resize_shorter_side(torch.from_numpy(labels), size, mode="nearest")
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), expected)


def test_preset_pairs_image_and_mask():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8))
    labels = rng.integers(0, 21, (30, 44)).astype(np.uint8)
    labels[0] = 255
    x, m = SegmentationEval(resize_size=20)(image, Image.fromarray(labels))
    assert x.shape == (3, 20, 29) and m.shape == (20, 29) and m.dtype == torch.int64
    torch.testing.assert_close(x, SemanticSegmentation(resize_size=20)(image), rtol=0, atol=0)
    expected = np.asarray(Image.fromarray(labels).resize((29, 20), Image.NEAREST))  # the reference's PIL resize
    np.testing.assert_array_equal(m.numpy(), expected)


def test_native_mask_and_no_resize():
    image = Image.new("RGB", (44, 30))
    mask = Image.new("L", (44, 30), 3)
    x, m = SegmentationEval(resize_size=20, resize_mask=False)(image, mask)
    assert x.shape == (3, 20, 29) and m.shape == (30, 44)
    x, m = SegmentationEval(resize_size=None)(image, mask)
    assert x.shape == (3, 30, 44) and m.shape == (30, 44) and (m == 3).all()


def test_size_mismatch():
    with pytest.raises(ValueError, match="mask is 40x30 but its image is 44x30"):
        SegmentationEval()(Image.new("RGB", (44, 30)), Image.new("L", (40, 30)))


def test_image_resize_is_within_one_level_of_pil():
    """The reference resizes PIL images; the shared tensor path differs by rounding only."""
    rng = np.random.default_rng(1)
    pixels = (np.cumsum(rng.integers(0, 9, (90, 70, 3)), axis=0) % 256).astype(np.uint8)
    image = Image.fromarray(pixels)
    x, _ = SegmentationEval(resize_size=52)(image, Image.new("L", image.size))
    ours = x * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    ours = (ours * 255).round().permute(1, 2, 0).numpy()
    pil = np.asarray(image.resize((52, 66), Image.BILINEAR)).astype(np.float64)
    assert ours.shape == pil.shape and np.abs(ours - pil).max() <= 1
