"""Tiny datasets written in their real on-disk formats, with the masks a reader must produce built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# COCO category ids used below: 1 person, 3 car, 6 bus, 17 cat, 18 dog are VOC classes; 27 backpack is not.
VOC_INDEX = {1: 15, 3: 7, 6: 6, 17: 8, 18: 12}


def rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """A COCO polygon for the box of pixels x0 <= x < x1, y0 <= y < y1 (pycocotools' convention)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, written out by hand: run lengths over the column-major pixels, zeros first."""
    flat = mask.reshape(-1, order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": counts, "size": [mask.shape[0], mask.shape[1]]}


def _noise_image(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


def make_coco(root: Path, splits: tuple[str, ...] = ("val",)) -> dict[int, np.ndarray]:
    """Write ``annotations/instances_{split}2017.json`` and ``{split}2017/`` images; return the expected masks.

    Image 1: two overlapping polygon instances (one in two parts, plus a 2-point polygon), a non-VOC object.
    Image 2: a crowd region as uncompressed RLE, an instance as compressed RLE, a polygon overlapping the crowd.
    Image 3: no annotations. Images 4-7 exercise the training filter's 1000-pixel ``area`` rule.
    """
    from pycocotools import mask as coco_mask

    sizes = {1: (32, 40), 2: (20, 24), 3: (16, 16), 4: (20, 30), 5: (20, 30), 6: (20, 30), 7: (20, 30)}
    expected = {i: np.zeros(hw, dtype=np.uint8) for i, hw in sizes.items()}
    anns = []

    def add(image_id: int, cat: int, seg: list | dict, area: float, crowd: int = 0) -> None:
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "segmentation": seg,
                     "area": area, "iscrowd": crowd, "bbox": [0, 0, 1, 1]})  # fmt: skip

    # image 1 (H 32, W 40): person x 4..19 y 4..23, dog = x 16..29 y 10..19 plus x 32..35 y 2..5; overlap -> 255.
    # The ``area`` fields (900 + 200) deliberately differ from the pixel counts: the filter reads the field.
    add(1, 1, [rect(4, 4, 20, 24)], 900)
    add(1, 18, [rect(16, 10, 30, 20), rect(32, 2, 36, 6), [1, 1, 2, 2]], 200)
    add(1, 27, [rect(0, 0, 40, 3)], 2000)  # backpack: not a VOC class, dropped, never causes overlap
    e = expected[1]
    e[box_mask(32, 40, 4, 4, 20, 24)] = 15
    e[box_mask(32, 40, 16, 10, 30, 20) | box_mask(32, 40, 32, 2, 36, 6)] = 12
    e[4:24, 4:20][box_mask(32, 40, 16, 10, 30, 20)[4:24, 4:20]] = 255

    # image 2 (H 20, W 24): crowd cat x 2..9 y 5..14 (uncompressed RLE), bus x 12..19 y 0..7 (compressed RLE),
    # car polygon x 8..11 y 12..17 overlapping the crowd region at x 8..9 y 12..14 -> 255 (crowd is an instance).
    crowd = box_mask(20, 24, 2, 5, 10, 15)
    add(2, 17, uncompressed_rle(crowd), 80, crowd=1)
    bus = box_mask(20, 24, 12, 0, 20, 8)
    rle = coco_mask.encode(np.asfortranarray(bus.astype(np.uint8)))
    add(2, 6, {"size": rle["size"], "counts": rle["counts"].decode()}, 64)
    add(2, 3, [rect(8, 12, 12, 18)], 24)
    e = expected[2]
    e[crowd] = 8
    e[bus] = 6
    e[12:18, 8:12] = 7
    e[12:15, 8:10] = 255

    add(4, 1, [rect(0, 0, 10, 10)], 100)  # small: dropped from train
    expected[4][0:10, 0:10] = 15
    add(5, 18, [rect(0, 0, 10, 10)], 1000)  # exactly 1000: dropped from train (the rule is "> 1000")
    expected[5][0:10, 0:10] = 12
    add(6, 27, [rect(0, 0, 30, 20)], 5000)  # only a non-VOC object: dropped from train
    add(7, 17, [rect(0, 0, 10, 10)], 1001)  # kept in train
    expected[7][0:10, 0:10] = 8

    names = [(1, "person"), (3, "car"), (6, "bus"), (17, "cat"), (18, "dog"), (27, "backpack")]
    categories = [{"id": c, "name": n, "supercategory": "x"} for c, n in names]
    for split in splits:
        images = []
        (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
        for i, (h, w) in sizes.items():
            name = f"{i:012d}.jpg"
            _noise_image(root / f"{split}2017" / name, w, h, seed=i)
            images.append({"id": i, "file_name": name, "height": h, "width": w})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        data = {"images": images[::-1], "annotations": anns, "categories": categories}  # ids out of order on purpose
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return expected


def voc_palette() -> list[int]:
    """The Pascal VOC colour map (bit-interleaved), flattened for ``putpalette``."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8))
    img.putpalette(voc_palette())  # mode "L" -> "P", indices kept
    img.save(path)


def voc_label(h: int, w: int, cls: int, seed: int) -> np.ndarray:
    """Background with one object box of class ``cls`` and a 1-pixel void (255) border around it."""
    rng = np.random.default_rng(seed)
    y0, x0 = rng.integers(2, h // 2), rng.integers(2, w // 2)
    y1, x1 = y0 + h // 3, x0 + w // 3
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    m[y0:y1, x0:x1] = cls
    return m


def make_voc(root: Path, aug: bool = False) -> dict[str, np.ndarray]:
    """A ``VOCdevkit/VOC2012`` tree (train: 2 ids, val: 3 ids, palette PNGs, void borders); expected labels by id.

    With ``aug``, ``SegmentationClassAug`` holds index PNGs for the train ids, two SBD-only ids and one val id.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    ids = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042", "2007_000061"]}
    labels = {}
    for k, i in enumerate(ids["train"] + ids["val"]):
        h, w = 24 + 4 * k, 32 - 2 * k
        _noise_image(voc / "JPEGImages" / f"{i}.jpg", w, h, seed=k)
        labels[i] = voc_label(h, w, cls=1 + 4 * k, seed=k)
        save_palette_png(voc / "SegmentationClass" / f"{i}.png", labels[i])
    for split, names in ids.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    if aug:
        (voc / "SegmentationClassAug").mkdir()
        for k, i in enumerate(["2008_000001", "2008_000002"]):
            _noise_image(voc / "JPEGImages" / f"{i}.jpg", 20, 16, seed=10 + k)
            labels[i] = voc_label(16, 20, cls=19 + k, seed=10 + k)
        for i in ids["train"] + ["2008_000001", "2008_000002", ids["val"][0]]:
            Image.fromarray(labels[i]).save(voc / "SegmentationClassAug" / f"{i}.png")  # plain index PNGs
    return labels


def make_folder(
    root: Path, classes: list[str], split_sizes: dict[str, list[tuple[int, int]]], seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """``classes.txt`` and ``{split}/{images,masks}/``: random labels (with some 255) per (H, W); returns them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, sizes in split_sizes.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        out[split] = {}
        for k, (h, w) in enumerate(sizes):
            stem = f"img{k:03d}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{stem}.png"
            )
            m = rng.integers(0, len(classes), (h, w)).astype(np.uint8)
            m[rng.random((h, w)) < 0.05] = 255
            Image.fromarray(m).save(root / split / "masks" / f"{stem}.png")
            out[split][stem] = m
    return out


def rotated_180_pair(image_path: Path, mask_path: Path, h: int = 16, w: int = 24) -> np.ndarray:
    """A JPEG whose stored pixels are red on the left and blue on the right, tagged EXIF "rotate 180", and an
    index mask aligned with those stored pixels (1 left, 2 right); returns the mask."""
    labels = np.ones((h, w), np.uint8)
    labels[:, w // 2 :] = 2
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[labels == 1, 0] = 255
    rgb[labels == 2, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(rgb).save(image_path, quality=95, exif=exif.tobytes())
    Image.fromarray(labels).save(mask_path)
    return labels


BINARY_MAPPED = "# value name\n0 background\n255 foreground\n"
BINARY_PLAIN = "background\nforeground\n"


def make_binary(root: Path, classes_txt: str, n: dict[str, int], size: int = 48, seed: int = 0) -> Path:
    """A 0/255 binary dataset as annotation tools export it: bright discs and boxes on a dark noisy background,
    masks holding 0 and 255; ``classes_txt`` is written verbatim (:data:`BINARY_MAPPED` or :data:`BINARY_PLAIN`)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes_txt)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in n.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for k in range(count):
            r = rng.uniform(0.2, 0.35) * size
            cy, cx = rng.uniform(r, size - r, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            fg = disc if k % 2 else (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
            image = rng.normal(40, 15, (size, size, 3))
            image[fg] = rng.normal(210, 15, (int(fg.sum()), 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / split / "images" / f"{k:03d}.png")
            Image.fromarray(np.where(fg, 255, 0).astype(np.uint8)).save(root / split / "masks" / f"{k:03d}.png")
    return root


def make_coco_export(root: Path, style: str) -> tuple[Path, dict[str, np.ndarray], list[str]]:
    """A COCO export as an annotation tool writes it; returns (annotation file, expected masks by file_name, names).

    ``cvat``: ``annotations/instances_default.json``, images under ``images/`` in sub-folders, category ids 3, 7
    and 12 listed out of order. ``labelstudio``: ``result.json`` beside ``images/``, file names ``images/...``,
    category ids from 0. Either way the labels are background, then the categories by id: tree, car, unused
    (never annotated). Image 1: overlapping polygons (the car, listed later, is on top); image 2: compressed RLE
    car and an uncompressed-RLE crowd tree; image 3: no annotation; image 4: a polygon car.
    """
    from pycocotools import mask as coco_mask

    ids = {"cvat": {"tree": 3, "car": 7, "unused": 12}, "labelstudio": {"tree": 0, "car": 1, "unused": 2}}[style]
    sizes = {1: (24, 32), 2: (20, 24), 3: (16, 16), 4: (24, 32)}
    names = {1: "batch1/a.jpg", 2: "batch1/b.png", 3: "c.jpg", 4: "batch2/d.png"}
    if style == "labelstudio":
        names = {i: f"images/{n.replace('/', '_')}" for i, n in names.items()}
    anns: list[dict] = []

    def add(image_id: int, cat: str, seg: list | dict, crowd: int = 0) -> None:
        anns.append({"id": 100 + len(anns), "image_id": image_id, "category_id": ids[cat], "segmentation": seg,
                     "area": 1.0, "bbox": [0, 0, 1, 1], "iscrowd": crowd})  # fmt: skip

    expected = {i: np.zeros(hw, np.uint8) for i, hw in sizes.items()}
    add(1, "tree", [rect(2, 2, 14, 20)])
    add(1, "car", [rect(10, 4, 28, 12)])
    expected[1][box_mask(24, 32, 2, 2, 14, 20)] = 1
    expected[1][box_mask(24, 32, 10, 4, 28, 12)] = 2  # over the tree where they overlap
    car = box_mask(20, 24, 12, 2, 22, 10)
    rle = coco_mask.encode(np.asfortranarray(car.astype(np.uint8)))
    add(2, "car", {"size": rle["size"], "counts": rle["counts"].decode()})
    crowd = box_mask(20, 24, 0, 12, 8, 20)
    add(2, "tree", uncompressed_rle(crowd), crowd=1)
    expected[2][car] = 2
    expected[2][crowd] = 1
    add(4, "car", [rect(4, 6, 20, 18)])
    expected[4][6:18, 4:20] = 2

    if style == "cvat":
        ann_file, image_root = root / "annotations" / "instances_default.json", root / "images"
    else:
        ann_file, image_root = root / "result.json", root
    images = []
    for i, (h, w) in sizes.items():
        path = image_root / names[i]
        path.parent.mkdir(parents=True, exist_ok=True)
        _noise_image(path, w, h, seed=20 + i)
        images.append({"id": i, "file_name": names[i], "height": h, "width": w})
    cats = [{"id": ids[n], "name": n, "supercategory": ""} for n in ("car", "unused", "tree")]
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann_file, {names[i]: m for i, m in expected.items()}, ["__background__", "tree", "car", "unused"]
