"""Every reader on files written by other tools (``tests/realfiles``, sources and licences in its README).

Each fixture goes through the three readers a user reaches: ``fcnseg data check``, the training batch (the check
``fit`` runs first, then the training preset and collate) and evaluation. The expected labels come from the files
read with plain PIL/pycocotools calls, not from fcnseg's readers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fcnseg.cli import main
from fcnseg.data import CocoSegmentation, FolderSegmentation, get_dataset
from fcnseg.data.check import validate_training_data
from fcnseg.evaluate import evaluate_dataset
from fcnseg.train import pad_collate
from fcnseg.transforms import SegmentationTrain

REAL = Path(__file__).parent.parent / "realfiles"
VOC_INDEX = {1: 15, 44: 5, 62: 9, 67: 11}  # COCO ids of the VOC classes the COCO 2017 excerpt annotates


def grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.getchannel(0) if img.mode in ("LA", "RGBA", "RGB") else img).astype(np.int64)


def colours(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        a = np.asarray(img.convert("RGB")).astype(np.int64)
    return a[..., 0] << 16 | a[..., 1] << 8 | a[..., 2]


# name -> (image, mask, classes.txt, raw reader, raw value -> label)
FOLDERS = {
    "labelme_rgba": ("labelme_rgba/img1.png", "labelme_rgba/img1_mask_1.png",
                     "0,0,0 background\n153,51,255 object\n", colours, {0: 0, 0x9933FF: 1}),
    "palette_p": ("labelme_rgba/img1.png", "labelme_rgba/img1.png", "background\nobject\n", grey, {0: 0, 1: 1}),
    "kaggle_16bit": ("kaggle_16bit/001.png", "kaggle_16bit/001_mask.png", "background\nforeground\n", grey,
                     {0: 0, 1: 1}),
    "mvtec_l": ("mvtec_l/000.png", "mvtec_l/000_mask.png", "0 good\n255 defect\n", grey, {0: 0, 255: 1}),
    "ade20k_rgb": ("ade20k_rgb/1.jpg", "ade20k_rgb/1_seg.png", "0,0,0 unlabeled\n0,1,1 wall\n1,0,2 floor\n", colours,
                   {0: 0, 0x000101: 1, 0x010002: 2}),
    "voc_colour": ("voc_colour/2007_000001.jpg", "voc_colour/2007_000001.png",
                   "0,128,0 bicycle\n224,224,192 ignore\n", colours, {0x008000: 0}),
    "la": ("pillow_la/hopper.jpg", "pillow_la/uncompressed_la.png",
           "".join(f"{v} grey{v}\n" for v in (0, 1, 17, 34, 51, 68, 85, 170, 238, 255)), grey,
           {v: i for i, v in enumerate((0, 1, 17, 34, 51, 68, 85, 170, 238, 255))}),
}  # fmt: skip


def folder(tmp_path: Path, name: str) -> tuple[Path, np.ndarray]:
    """A folder dataset of one real pair (split ``train`` and ``val``); returns the root and the expected labels."""
    image, mask, classes, reader, table = FOLDERS[name]
    root = tmp_path / name
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        shutil.copy(REAL / "masks" / image, root / split / "images" / ("x" + Path(image).suffix))
        shutil.copy(REAL / "masks" / mask, root / split / "masks" / "x.png")
    (root / "classes.txt").write_text(classes)
    raw = reader(REAL / "masks" / mask)
    expected = np.vectorize(lambda v: table.get(v, 255))(raw)
    return root, expected


class PixelModel(nn.Module):
    """A 1x1 convolution: logits at the input's resolution, any size, for running evaluation quickly."""

    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


def first_training_batch(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``fit`` does before its first step: check the data, then augment and collate a batch."""
    validate_training_data(dataset)
    preset = SegmentationTrain(base_size=32, crop_size=32)
    samples = [preset(*dataset[i], torch.Generator().manual_seed(i)) for i in range(min(2, len(dataset)))]
    return pad_collate(samples)


def assert_batch_labels(batch: tuple[torch.Tensor, torch.Tensor], k: int) -> None:
    images, masks = batch
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
    assert set(masks.unique().tolist()) <= set(range(k)) | {255}


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_real_masks_through_check_training_batch_and_eval(name, tmp_path, capsys):
    root, expected = folder(tmp_path, name)
    assert main(["data", "check", str(root)]) == 0, capsys.readouterr().out
    ds = FolderSegmentation(root, "train")
    np.testing.assert_array_equal(np.asarray(ds[0][1]), expected)
    assert_batch_labels(first_training_batch(ds), len(ds.categories))
    run = evaluate_dataset(PixelModel(len(ds.categories)), FolderSegmentation(root, "val"), len(ds.categories),
                           resize_size=None)  # fmt: skip
    assert int(run.confusion.mat.sum()) == int((expected != 255).sum())  # every labelled pixel was scored


def test_a_16_bit_picture_given_as_a_mask_is_named_and_the_good_pair_still_counts(tmp_path, capsys):
    root, _ = folder(tmp_path, "kaggle_16bit")
    shutil.copy(REAL / "masks" / "pillow_16bit" / "i_trns.png", root / "train" / "images" / "y.png")
    shutil.copy(REAL / "masks" / "pillow_16bit" / "i_trns.png", root / "train" / "masks" / "y.png")
    assert main(["data", "check", str(root), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "1 masks with values outside the classes 0..1" in out and "train/masks/y.png: 2, 3, 4" in out
    assert "train: 2 image/mask pairs" in out.replace("split ", "")


# --- COCO 2017: the official file's layout, all 80 categories -------------------------------------------------


def coco2017_tree(root: Path) -> Path:
    """``annotations/instances_{train,val}2017.json`` (the real excerpt) and stand-in photos of the declared sizes."""
    ann = REAL / "coco2017" / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(ann, root / "annotations" / f"instances_{split}2017.json")
        (root / f"{split}2017").mkdir()
        for k, img in enumerate(data["images"]):
            rng = np.random.default_rng(k)
            small = rng.integers(0, 256, (img["height"] // 16, img["width"] // 16, 3), dtype=np.uint8)
            photo = Image.fromarray(small).resize((img["width"], img["height"]))
            photo.save(root / f"{split}2017" / img["file_name"], quality=80)
    return root


def reference_masks(ann_file: Path) -> dict[int, np.ndarray]:
    """torchvision's ConvertCocoPolysToMask on pycocotools' own ``annToMask``: VOC classes, overlaps 255."""
    from pycocotools.coco import COCO

    coco = COCO(str(ann_file))
    out = {}
    for image_id, info in coco.imgs.items():
        target = np.zeros((info["height"], info["width"]), np.uint8)
        cover = np.zeros_like(target, dtype=np.int32)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            if a["category_id"] in VOC_INDEX:
                m = coco.annToMask(a)
                target = np.maximum(target, m * VOC_INDEX[a["category_id"]])
                cover += m
        target[cover > 1] = 255
        out[image_id] = target
    return out


@pytest.fixture(scope="module")
def coco2017(tmp_path_factory):
    return coco2017_tree(tmp_path_factory.mktemp("coco2017"))


def test_coco2017_file_has_all_80_categories_and_checks_clean(coco2017, capsys):
    data = json.loads((coco2017 / "annotations" / "instances_val2017.json").read_text())
    assert len(data["categories"]) == 80 and data["info"]["description"] == "COCO 2017 Dataset"
    assert main(["data", "check", "--dataset", "coco", str(coco2017), "--split", "train", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "is not in the file's categories" not in out
    assert "annotations of categories outside these classes count as background" in out
    assert "ignored (255), as COCO 2017's protocol says" in out


def test_coco2017_masks_training_batch_and_eval(coco2017):
    ds = CocoSegmentation(coco2017, "val")
    expected = reference_masks(ds.ann_file)
    assert ds.ids == sorted(expected)
    for i, image_id in enumerate(ds.ids):
        np.testing.assert_array_equal(np.asarray(ds[i][1]), expected[image_id], err_msg=f"image {image_id}")
    assert sum(int((m == 15).sum()) for m in expected.values()) > 0  # people are labelled: not vacuous
    assert_batch_labels(first_training_batch(CocoSegmentation(coco2017, "train")), 21)
    run = evaluate_dataset(PixelModel(21), ds, 21, resize_size=None)
    assert int(run.confusion.mat.sum()) == sum(int((m != 255).sum()) for m in expected.values())


@pytest.mark.slow
def test_fcnseg_train_runs_on_coco2017(coco2017, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "coco", "--data-root", coco2017, "--weights-backbone", "none",
            "--base-size", 32, "--crop-size", 32, "-b", 4, "--epochs", 1, "--workers", 0, "--no-progress",
            "--output-dir", run]  # fmt: skip
    assert main(list(map(str, argv))) == 0
    ckpt = torch.load(run / "last.pth", map_location="cpu", weights_only=False)
    assert ckpt["categories"][15] == "person" and len(ckpt["categories"]) == 21


# --- CVAT's COCO export (Datumaro's writer) ------------------------------------------------------------------------


def test_cvat_export_through_every_reader(capsys):
    root = REAL / "cvat_coco"
    assert main(["data", "check", "--dataset", "coco", str(root), "--split", "train", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "the later annotation is on top" in out
    val = CocoSegmentation(root, "val")
    assert val.categories == ["__background__", "a", "b", "c"]  # ids 1, 2, 4
    # b.jpg, 5 wide 10 high: polygon "a" on x 0, y 0..1, then the crowd RLE "b" (counts 0, 20, 30, column-major:
    # columns 0 and 1), listed later and so on top of it.
    expected = np.zeros((10, 5), np.uint8)
    expected[:, 0:2] = 2
    np.testing.assert_array_equal(np.asarray(val[0][1]), expected)
    train = CocoSegmentation(root, "train")
    assert (np.asarray(train[0][1]) == 0).all()  # a.jpg: one annotation with an empty segmentation
    batch = first_training_batch(val)
    assert_batch_labels(batch, 4)
    run = evaluate_dataset(PixelModel(4), val, 4, resize_size=None)
    assert int(run.confusion.mat.sum()) == 50


# --- EXIF-rotated photos ---------------------------------------------------------------------------------------


def exif_export(root: Path, declared: tuple[int, int]) -> Path:
    """A COCO export of the real camera photo (stored 1200x1800, EXIF 6) declaring ``declared`` (W, H)."""
    (root / "images").mkdir(parents=True)
    shutil.copy(REAL / "exif" / "Landscape_6.jpg", root / "images" / "photo.jpg")
    w, h = declared
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, w, 0, w, h / 2, 0, h / 2]],
           "area": w * h / 2, "bbox": [0, 0, w, h / 2], "iscrowd": 0}  # fmt: skip
    data = {"images": [{"id": 1, "file_name": "photo.jpg", "width": w, "height": h}], "annotations": [ann],
            "categories": [{"id": 1, "name": "sky"}]}  # fmt: skip
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return root


def test_an_export_drawn_on_the_rotated_photo_is_named(tmp_path, capsys):
    root = exif_export(tmp_path / "turned", (1800, 1200))  # the size a browser shows
    assert main(["data", "check", "--dataset", "coco", str(root), "--split", "default"]) == 1
    out = capsys.readouterr().out
    assert "photo.jpg: stored as 1200x1800 but the annotation file declares 1800x1200" in out
    assert "as displayed (EXIF orientation 6)" in out
    with pytest.raises(ValueError, match=r"photo\.jpg: stored as 1200x1800 .*EXIF orientation 6"):
        CocoSegmentation(root, "default")[0]


def test_an_export_of_the_stored_pixels_reads(tmp_path, capsys):
    root = exif_export(tmp_path / "stored", (1200, 1800))
    assert main(["data", "check", "--dataset", "coco", str(root), "--split", "default"]) == 0
    image, mask = get_dataset("coco", root, "default")[0]
    assert image.size == mask.size == (1200, 1800)
    assert (np.asarray(mask)[:899] == 1).all() and (np.asarray(mask)[901:] == 0).all()


def test_a_mask_of_the_displayed_tiny_jpeg_is_named(tmp_path):
    root = tmp_path / "tiny"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    shutil.copy(REAL / "exif" / "orientation_rectangle.jpg", root / "train" / "images" / "r.jpg")  # 2x1, EXIF 8
    Image.fromarray(np.zeros((2, 1), np.uint8)).save(root / "train" / "masks" / "r.png")  # 1x2: as displayed
    (root / "classes.txt").write_text("background\n")
    with pytest.raises(ValueError, match=r"r\.png: mask is 1x2 but its image is 2x1.*EXIF orientation 8"):
        FolderSegmentation(root, "train")[0]
