"""Folder datasets: pairing by stem, index and palette masks, size checks, 16-bit masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from seg_datasets import make_folder, rotated_180_pair, save_palette_png

from fcnseg.data import FolderSegmentation, read_mask


def test_pairs_and_masks(tmp_path):
    truth = make_folder(tmp_path, ["bg", "a", "b"], {"train": [(20, 24), (16, 16)], "val": [(12, 30)]})
    ds = FolderSegmentation(tmp_path, "train")
    assert ds.categories == ["bg", "a", "b"] and len(ds) == 2
    for i, stem in enumerate(sorted(truth["train"])):
        image, mask = ds[i]
        np.testing.assert_array_equal(np.asarray(mask), truth["train"][stem])
        assert image.size == mask.size
        assert ds.image_size(i) == truth["train"][stem].shape


def test_palette_png_reads_indices_not_colours(tmp_path):
    labels = np.array([[0, 1, 2], [15, 255, 20]], dtype=np.uint8)
    save_palette_png(tmp_path / "m.png", labels)
    np.testing.assert_array_equal(np.asarray(read_mask(tmp_path / "m.png")), labels)


def test_16_bit_masks(tmp_path):
    Image.fromarray(np.array([[0, 3], [7, 255]], dtype=np.uint16)).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(np.asarray(read_mask(tmp_path / "ok.png")), [[0, 3], [7, 255]])
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big\.png: label values 0\.\.300 do not fit"):
        read_mask(tmp_path / "big.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png: mask must be a single-channel"):
        read_mask(tmp_path / "rgb.png")


def test_size_mismatch_names_the_mask(tmp_path):
    make_folder(tmp_path, ["bg", "a"], {"val": [(10, 10)]})
    Image.new("L", (9, 10)).save(tmp_path / "val/masks/img000.png")
    with pytest.raises(ValueError, match=r"img000\.png: mask is 9x10 but its image is 10x10"):
        FolderSegmentation(tmp_path, "val")[0]


def red_where_mask_is_1(image, mask) -> float:
    """Share of pixels where "red" (the image) and "class 1" (the mask) agree."""
    red = np.asarray(image)[..., 0] > 128
    return float((red == (np.asarray(mask) == 1)).mean())


def test_rotate_180_jpeg_stays_aligned_with_its_mask(tmp_path):
    make_folder(tmp_path, ["bg", "left", "right"], {"train": [(10, 10)]})
    rotated_180_pair(tmp_path / "train/images/img000.jpg", tmp_path / "train/masks/img000.png")
    (tmp_path / "train/images/img000.png").unlink()
    image, mask = FolderSegmentation(tmp_path, "train")[0]
    assert red_where_mask_is_1(image, mask) == 1.0  # 0.0 if the photo alone were turned upright


def test_exif_orientation_not_applied_and_a_displayed_frame_mask_named(tmp_path):
    make_folder(tmp_path, ["bg", "a"], {"val": [(10, 10)]})
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (12, 8)).save(tmp_path / "val/images/img000.png", exif=exif.tobytes())
    Image.new("L", (12, 8)).save(tmp_path / "val/masks/img000.png")
    ds = FolderSegmentation(tmp_path, "val")
    assert ds.image_size(0) == (8, 12)  # as stored
    image, mask = ds[0]
    assert image.size == mask.size == (12, 8)
    Image.new("L", (8, 12)).save(tmp_path / "val/masks/img000.png")  # drawn on the photo turned upright
    with pytest.raises(ValueError, match=r"img000\.png: mask is 8x12 but .* as displayed \(EXIF orientation 6\)"):
        ds[0]
