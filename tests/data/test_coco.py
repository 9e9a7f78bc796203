"""COCO as segmentation: masks against hand-built expectations, the reference's filters and remapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from seg_datasets import make_coco

from fcnseg.data import COCO_VOC_CATEGORY_IDS, CocoSegmentation, get_dataset
from fcnseg.data.coco import coco_target, filter_and_remap
from fcnseg.weights import VOC_CATEGORIES


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, make_coco(root, splits=("train", "val"))


def test_val_keeps_every_image_in_id_order_with_hand_built_masks(coco):
    root, expected = coco
    ds = CocoSegmentation(root, "val")
    assert ds.ids == sorted(expected)  # sorted although the JSON lists them in reverse
    assert ds.categories == VOC_CATEGORIES
    for i, image_id in enumerate(ds.ids):
        image, mask = ds[i]
        assert image.mode == "RGB" and mask.mode == "L"
        assert image.size == mask.size == expected[image_id].shape[::-1]
        np.testing.assert_array_equal(np.asarray(mask), expected[image_id], err_msg=f"image {image_id}")
        assert ds.image_size(i) == expected[image_id].shape


def test_overlaps_crowd_and_rle_details(coco):
    root, expected = coco
    ds = CocoSegmentation(root, "val")
    m1 = np.asarray(ds[0][1])
    assert (m1 == 255).sum() == 4 * 10  # person x 4..19 and dog x 16..29 meet on x 16..19, y 10..19
    assert (m1[0:3, :32] == 0).all()  # the backpack (not a VOC class) is dropped, so it neither paints nor overlaps
    m2 = np.asarray(ds[1][1])
    assert set(np.unique(m2).tolist()) == {0, 6, 7, 8, 255}  # bus (compressed RLE), car, crowd cat, overlap
    assert (np.asarray(ds[2][1]) == 0).all()  # no annotations: all background


def test_train_drops_images_by_the_1000_pixel_area_rule(coco):
    root, _ = coco
    ds = CocoSegmentation(root, "train")
    # 1: areas 900 + 200 (the field, not the pixel count) > 1000; 7: 1001. Dropped: 2 (168), 3 (none),
    # 4 (100), 5 (exactly 1000), 6 (only a non-VOC object of area 5000).
    assert ds.ids == [1, 7]
    assert len(ds) == 2
    assert len(CocoSegmentation(root, "train", remove_images_without_annotations=False)) == 7


def test_remap_matches_reference_semantics():
    anns = [{"category_id": 18, "x": 1}, {"category_id": 27}, {"category_id": 1}]
    out = filter_and_remap(anns, COCO_VOC_CATEGORY_IDS)
    assert [a["category_id"] for a in out] == [12, 15]
    assert anns[0]["category_id"] == 18  # the input is not modified (the reference deep-copies)
    assert out[0]["x"] == 1


def test_non_voc_category_list(coco):
    root, _ = coco
    ds = CocoSegmentation(root, "val", category_ids=[0, 27, 1])
    assert ds.categories == ["__background__", "backpack", "person"]
    m = np.asarray(ds[0][1])
    expected = np.zeros((32, 40), np.uint8)
    expected[0:3, :] = 1
    expected[4:24, 4:20] = 2
    np.testing.assert_array_equal(m, expected)


def test_max_rule_and_empty_target():
    # Two instances of different classes touching nothing: max of (mask x class) paints each with its class.
    anns = [
        {"category_id": 3, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        {"category_id": 5, "segmentation": [[2, 2, 4, 2, 4, 4, 2, 4]]},
    ]
    t = coco_target(anns, 4, 4)
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :2] = 3
    expected[2:, 2:] = 5
    np.testing.assert_array_equal(t, expected)
    assert coco_target([], 3, 5).shape == (3, 5)


def test_rle_size_mismatch_names_the_image(tmp_path):
    root = tmp_path
    (root / "val2017").mkdir()
    (root / "annotations").mkdir()
    Image.new("RGB", (8, 6)).save(root / "val2017" / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 4, "iscrowd": 1,
                         "segmentation": {"counts": [0, 4, 16], "size": [5, 4]}}],
    }  # fmt: skip
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"a\.jpg: RLE of size 4x5 on a 8x6 image"):
        CocoSegmentation(root)[0]


def test_exif_orientation_is_not_applied(tmp_path):
    """COCO polygons refer to the stored pixels, so a rotated-EXIF image must stay as stored (as the reference)."""
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees" on display
    Image.new("RGB", (12, 8), (200, 10, 10)).save(tmp_path / "val2017" / "r.jpg", exif=exif.tobytes())
    data = {
        "images": [{"id": 1, "file_name": "r.jpg", "height": 8, "width": 12}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 6, "iscrowd": 0,
                         "segmentation": [[0, 0, 3, 0, 3, 2, 0, 2]]}],
    }  # fmt: skip
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    image, mask = CocoSegmentation(tmp_path)[0]
    assert image.size == mask.size == (12, 8)
    assert (np.asarray(mask)[:2, :3] == 15).all()


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        CocoSegmentation(tmp_path)
    with pytest.raises(FileNotFoundError, match="no COCO annotations for split 'test'.*annotations/test.json"):
        CocoSegmentation(tmp_path, "test")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a COCO instances file"):
        get_dataset("coco", tmp_path)


def _reference_target(anns, h, w):
    """torchvision's ConvertCocoPolysToMask, transcribed (torch ops, frPyObjects on every segmentation)."""
    import torch
    from pycocotools import mask as coco_mask

    masks = []
    for polygons in [a["segmentation"] for a in anns]:
        m = coco_mask.decode(coco_mask.frPyObjects(polygons, h, w))
        if len(m.shape) < 3:
            m = m[..., None]
        masks.append(torch.as_tensor(m, dtype=torch.uint8).any(dim=2))
    masks = torch.stack(masks, dim=0)
    cats = torch.as_tensor([a["category_id"] for a in anns], dtype=masks.dtype)
    target, _ = (masks * cats[:, None, None]).max(dim=0)
    target[masks.sum(0) > 1] = 255
    return target.numpy()


def _compressed(seg) -> bool:
    return isinstance(seg, dict) and not isinstance(seg["counts"], list)


def test_agrees_with_the_reference_transcription(coco):
    root, _ = coco
    ds = CocoSegmentation(root, "val")
    for i, image_id in enumerate(ds.ids):
        anns = filter_and_remap(ds._anns[image_id], COCO_VOC_CATEGORY_IDS)
        anns = [a for a in anns if not _compressed(a["segmentation"])]
        if not anns:
            continue  # compressed RLE: the reference cannot read it (a deliberate extension here)
        h, w = ds.image_size(i)
        np.testing.assert_array_equal(coco_target(anns, h, w), _reference_target(anns, h, w))


def test_compressed_rle_runs_agree_with_pycocotools_and_bad_strings_are_named(tmp_path):
    """The check reads COCO's compressed RLE string as pycocotools does (round trip on random masks); a string that
    does not decode to the image's pixel count is one line naming the annotation, not pycocotools' bare
    'Invalid RLE mask representation' (found by the fuzzer)."""
    from pycocotools import mask as coco_mask

    from fcnseg.data.check import check_coco
    from fcnseg.data.coco import _compressed_runs

    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        a = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        flat = a.flatten(order="F")  # COCO runs are column-major, starting with a run of zeros
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
        runs = np.diff(np.concatenate([[0], edges])).tolist()
        counts = coco_mask.encode(np.asfortranarray(a))["counts"].decode()
        assert _compressed_runs(counts) == runs
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 6, "height": 4}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 1, "bbox": [0, 0, 1, 1],
                         "segmentation": {"size": [4, 6], "counts": "zzzz"}}],
    }  # fmt: skip
    Image.new("RGB", (6, 4)).save(tmp_path / "a.png")
    (tmp_path / "result.json").write_text(json.dumps(doc))
    report = check_coco(CocoSegmentation.from_file(tmp_path / "result.json"), pixels=True)
    assert "annotation 7 on a.png: RLE counts string does not decode" in str(report)
