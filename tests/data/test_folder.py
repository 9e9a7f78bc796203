"""Folder datasets: pairing by stem, index and palette masks, size checks, 16-bit masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from seg_datasets import make_folder, save_palette_png

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


def test_exif_rotated_header_size(tmp_path):
    make_folder(tmp_path, ["bg", "a"], {"val": [(10, 10)]})
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (12, 8)).save(tmp_path / "val/images/img000.png", exif=exif.tobytes())
    Image.new("L", (8, 12)).save(tmp_path / "val/masks/img000.png")
    ds = FolderSegmentation(tmp_path, "val")
    assert ds.image_size(0) == (12, 8)  # as decoded, upright
    image, mask = ds[0]
    assert image.size == mask.size == (8, 12)
