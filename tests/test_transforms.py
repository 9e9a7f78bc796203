from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.transforms import (
    SemanticSegmentation,
    label_to_image,
    normalize,
    overlay,
    palette,
    resize_shorter_side,
    resized_size,
    to_uint8_tensor,
)

# Pascal VOC's colours for its 21 classes, as listed in the devkit's VOClabelcolormap and its SegmentationClass PNGs
VOC_COLOURS = [
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128),
    (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
]  # fmt: skip


def test_palette_is_vocs_and_keeps_neighbouring_classes_apart():
    np.testing.assert_array_equal(palette(21), np.array(VOC_COLOURS, dtype=np.uint8))
    table = palette(256).astype(int)
    assert table.shape == (256, 3) and palette(256).dtype == np.uint8
    assert tuple(table[255]) == (224, 224, 192)  # VOC's void colour
    assert len({tuple(c) for c in table}) == 256  # every class its own colour
    # classes i and i+1 differ by 128 in some channel (the hub formula made classes 1 and 2 two greens)
    assert np.abs(table[1:] - table[:-1]).max(1).min() >= 128
    for k in (2, 3, 7, 40):  # any class count: the first k colours of the same table
        np.testing.assert_array_equal(palette(k), palette(256)[:k])


def test_label_map_round_trips_through_a_palette_png():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, size=(37, 53), dtype=np.uint8)
    mask[0, 0] = 255  # ignore label survives too
    buf = io.BytesIO()
    label_to_image(mask).save(buf, format="PNG")
    back = Image.open(io.BytesIO(buf.getvalue()))
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back), mask)
    colours = np.asarray(back.convert("RGB"))
    np.testing.assert_array_equal(colours[5, 7], palette(256)[mask[5, 7]])


def test_label_to_image_rejects_bad_maps():
    with pytest.raises(ValueError, match="HxW"):
        label_to_image(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        label_to_image(np.array([[300]]))


@pytest.mark.parametrize(("hw", "size", "expected"), [((100, 200), 520, (520, 1040)), ((375, 500), 520, (520, 693)),
                                                      ((500, 375), 520, (693, 520)), ((7, 7), 3, (3, 3))])  # fmt: skip
def test_resized_size_truncates_like_torchvision(hw, size, expected):
    assert resized_size(*hw, size) == expected
    assert resize_shorter_side(torch.zeros(3, *hw), size).shape[-2:] == expected


def test_nearest_resize_keeps_label_values():
    mask = torch.tensor([[0, 255], [7, 3]], dtype=torch.uint8)
    out = resize_shorter_side(mask[None], 4, mode="nearest")[0]
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) == {0, 3, 7, 255}


def test_preset_accepts_pil_arrays_and_tensors_alike():
    arr = np.random.default_rng(1).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    preset = SemanticSegmentation(resize_size=None)
    a, b, c = preset(Image.fromarray(arr)), preset(arr), preset(torch.from_numpy(arr).permute(2, 0, 1))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, normalize(torch.from_numpy(arr).permute(2, 0, 1)))
    assert SemanticSegmentation(resize_size=15)(arr).shape == (3, 15, 20)
    with pytest.raises(ValueError, match="HxWx3"):
        preset(np.zeros((4, 4), np.uint8))


def test_to_uint8_tensor_scales_float_tensors():
    t = to_uint8_tensor(torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1))
    assert t.flatten().tolist() == [0, 128, 255]


def test_overlay_keeps_background_and_blends_classes():
    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[2:, 2:] = 15
    out = np.asarray(overlay(img, mask, alpha=0.5)).astype(int)
    assert (out[0, 0] == 200).all()
    np.testing.assert_allclose(out[3, 3], np.round(0.5 * 200 + 0.5 * palette(21)[15]), atol=1)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_overlay_is_within_one_level_of_the_float_blend(alpha):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    mask = rng.integers(0, 21, (9, 13)).astype(np.uint8)
    a = np.where(mask[..., None] == 0, 0.0, alpha)
    expected = np.round(img * (1 - a) + palette(256)[mask] * a)
    out = np.asarray(overlay(img, mask, alpha=alpha)).astype(int)
    assert np.abs(out - expected).max() <= 1
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
