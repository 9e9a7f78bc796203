"""Pascal VOC 2012: palette PNGs read as class indices with the void border kept, root variants, SBD train_aug."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from seg_datasets import make_voc, rotated_180_pair

from fcnseg.data import VOCSegmentation, get_dataset
from fcnseg.weights import VOC_CATEGORIES


def test_val_masks_are_indices_with_void(tmp_path):
    labels = make_voc(tmp_path)
    ds = VOCSegmentation(tmp_path, "val")
    assert ds.categories == VOC_CATEGORIES
    assert [p.stem for p in ds.images] == ["2007_000033", "2007_000042", "2007_000061"]
    assert Image.open(ds.masks[0]).mode == "P"  # stored as a palette PNG...
    for i, path in enumerate(ds.images):
        image, mask = ds[i]
        np.testing.assert_array_equal(np.asarray(mask), labels[path.stem])  # ...read as its indices, 255 kept
        assert image.size == mask.size
        assert ds.image_size(i) == labels[path.stem].shape
    assert 255 in np.asarray(ds[0][1])


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_variants(tmp_path, sub):
    make_voc(tmp_path)
    assert len(get_dataset("voc", tmp_path / sub, "train")) == 2


def test_train_aug_without_list_is_aug_masks_minus_val(tmp_path):
    labels = make_voc(tmp_path, aug=True)
    ds = VOCSegmentation(tmp_path, "train_aug")
    ids = [p.stem for p in ds.images]
    assert ids == ["2007_000032", "2007_000039", "2008_000001", "2008_000002"]  # 2007_000033 is in val.txt
    for i, stem in enumerate(ids):
        np.testing.assert_array_equal(np.asarray(ds[i][1]), labels[stem])


def test_train_aug_list_wins(tmp_path):
    make_voc(tmp_path, aug=True)
    lists = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (lists / "train_aug.txt").write_text("2008_000002\n2007_000032\n")
    assert [p.stem for p in VOCSegmentation(tmp_path, "train_aug").images] == ["2008_000002", "2007_000032"]


def test_errors_name_the_file(tmp_path):
    make_voc(tmp_path)
    voc = tmp_path / "VOCdevkit/VOC2012"
    with pytest.raises(FileNotFoundError, match="no VOCdevkit"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCSegmentation(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug"):
        VOCSegmentation(tmp_path, "train_aug")
    Image.new("L", (5, 5)).save(voc / "SegmentationClass" / "2007_000042.png")
    with pytest.raises(ValueError, match=r"2007_000042\.png: mask is 5x5 but its image is"):
        VOCSegmentation(tmp_path)[1]
    (voc / "JPEGImages" / "2007_000061.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000061.jpg"):
        VOCSegmentation(tmp_path)


def test_rotate_180_jpeg_stays_aligned_with_its_mask(tmp_path):
    make_voc(tmp_path)
    voc = tmp_path / "VOCdevkit/VOC2012"
    labels = rotated_180_pair(voc / "JPEGImages/2007_000033.jpg", voc / "SegmentationClass/2007_000033.png")
    image, mask = VOCSegmentation(tmp_path, "val")[0]
    np.testing.assert_array_equal(np.asarray(mask), labels)
    red = np.asarray(image)[..., 0] > 128
    assert (red == (labels == 1)).all()  # none if the photo alone were turned upright
