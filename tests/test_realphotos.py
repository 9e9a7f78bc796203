"""Photos as phones and image libraries write them (``tests/realfiles/photos``, sources in its README): HEIC from
an Android phone, AVIF with a rotation and a mirror, a 3D camera's MPO. Each is checked against the library that
reads it, called directly (pillow-heif, Pillow), and found by a folder walk, a ``data check`` and ``segment``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fcnseg.cli import main
from fcnseg.cli._inputs import collect_inputs
from fcnseg.imageio import IMAGE_SUFFIXES, ImageDecodeError, load_image

PHOTOS = Path(__file__).parent / "realfiles" / "photos"


def test_a_phones_heic_reads_as_pillow_heif_reads_it():
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs pip install 'fcnseg[heif]'")
    expected = np.asarray(pillow_heif.open_heif(PHOTOS / "sample_still_photo.heic").to_pillow().convert("RGB"))
    got = np.asarray(load_image(PHOTOS / "sample_still_photo.heic"))
    assert got.shape == (1920, 1080, 3)
    np.testing.assert_array_equal(got, expected)


def test_heic_without_its_plugin_says_what_to_install(monkeypatch):
    Image.init()
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)  # as if pillow-heif were not installed
    monkeypatch.setattr(Image, "ID", [i for i in Image.ID if i != "HEIF"])
    with pytest.raises(ImageDecodeError, match=r"sample_still_photo.heic: .*pip install 'fcnseg\[heif\]'$"):
        load_image(PHOTOS / "sample_still_photo.heic")


def test_avif_turned_and_mirrored_shows_as_the_plain_one():
    """Pillow's rot1mir1.avif (a quarter turn and a mirror in its header) displays as rot0mir0.avif, the same
    picture stored plainly (lossy: close, and far from any other orientation of it)."""
    plain = np.asarray(load_image(PHOTOS / "rot0mir0.avif")).astype(int)
    turned = np.asarray(load_image(PHOTOS / "rot1mir1.avif")).astype(int)
    with Image.open(PHOTOS / "rot1mir1.avif") as img:
        assert img.size == (427, 640)  # stored portrait
    assert turned.shape == plain.shape == (427, 640, 3)
    assert np.abs(turned - plain).mean() < 12
    assert min(np.abs(turned[:, ::-1] - plain).mean(), np.abs(turned[::-1] - plain).mean()) > 30


def test_mpo_reads_its_first_view():
    with Image.open(PHOTOS / "sugarshack.mpo") as img:
        assert img.format == "MPO" and img.n_frames == 2
        img.seek(0)
        first = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(PHOTOS / "sugarshack.mpo")), first)


def test_every_format_is_walked_and_other_files_are_named(tmp_path):
    for suffix in (".heic", ".heif", ".hif", ".avif", ".mpo", ".jpg", ".png", ".webp", ".jp2", ".qoi"):
        assert suffix in IMAGE_SUFFIXES
    assert ".mpg" not in IMAGE_SUFFIXES  # a clip, not Pillow's header-only MPEG plugin
    src = tmp_path / "in"
    shutil.copytree(PHOTOS, src)
    for name in ("notes.txt", "IMG_0001.AAE", "b.xmp", "c.json"):
        (src / name).write_text("{}")
    said: list[str] = []
    found = collect_inputs([str(src)], warn=said.append)
    assert sorted(i.path.name for i in found) == sorted(p.name for p in PHOTOS.iterdir())
    assert said == [
        f"4 files in the folders skipped, not a format fcnseg reads: {src / 'IMG_0001.AAE'}, {src / 'b.xmp'}, "
        f"{src / 'c.json'} and 1 more"
    ]


def test_data_check_pairs_avif_and_heic_images_with_their_masks(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir()
    (root / "classes.txt").write_text("background\nthing\n")
    for name in ("rot0mir0.avif", "sample_still_photo.heic"):
        shutil.copy(PHOTOS / name, root / "train" / "images" / name)
        with Image.open(PHOTOS / name) as img:
            w, h = img.size
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2] = 1
        Image.fromarray(mask).save(root / "train" / "masks" / f"{Path(name).stem}.png")
    assert main(["data", "check", str(root), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "masks without an image" not in out and "train: 2 image/mask pairs" in out.replace("split ", "")
