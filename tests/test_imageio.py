"""load_image: every odd or broken input decodes to the RGB image a viewer shows, or fails with one clear line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imagefiles import exif_rotated, photo, png_header, write_bad_files, write_good_oddities
from PIL import Image

from fcnseg import imageio
from fcnseg.imageio import ImageDecodeError, load_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_lossless_formats_round_trip(fmt):
    img = Image.new("RGB", (5, 3), (10, 200, 30))
    img.putpixel((4, 2), (250, 0, 120))
    out = load_image(encode(img, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert out.mode == "RGB" and out.size == (5, 3)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert load_image(data).getpixel((0, 0)) == (255, 0, 0)


def test_modes_become_rgb_by_hand():
    assert load_image(encode(Image.new("L", (2, 2), 77), "PNG")).getpixel((1, 1)) == (77, 77, 77)
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(200, 0, 0, 255), (200, 0, 0, 0), (0, 0, 100, 128)])
    px = [tuple(p) for p in np.asarray(load_image(encode(rgba, "PNG")))[0].tolist()]
    assert px[0] == (200, 0, 0) and px[1] == (255, 255, 255)  # transparent -> white
    assert px[2] == pytest.approx((127, 127, 177), abs=1)  # half alpha over white
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert np.asarray(load_image(encode(pal, "PNG")))[0].tolist() == [[0, 0, 0], [10, 20, 30]]
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(load_image(encode(deep, "PNG")))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_colours():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red ink
    assert load_image(encode(cmyk, "JPEG", quality=100)).getpixel((4, 4)) == pytest.approx((255, 0, 0), abs=3)


def test_exif_orientation_is_applied():
    upright = photo(20, 30)
    stored = exif_rotated(upright)
    data = encode(stored, "PNG", exif=stored.info["exif"])
    assert Image.open(io.BytesIO(data)).size == (20, 30)  # stored sideways
    out = load_image(data)
    assert out.size == (30, 20)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(upright))


def test_tiny_images(tmp_path):
    sizes = write_good_oddities(tmp_path)
    for name in ("one.png", "thin.png"):
        h, w = sizes[name]
        assert load_image(tmp_path / name).size == (w, h)


def test_bad_files_fail_with_one_line_naming_the_file(tmp_path):
    for name, phrase in write_bad_files(tmp_path).items():
        with pytest.raises(ImageDecodeError) as e:
            load_image(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and phrase in msg and "\n" not in msg, msg


def test_unreadable_paths(tmp_path, monkeypatch):
    with pytest.raises(ImageDecodeError, match="missing.jpg: cannot open"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="folder.jpg: cannot open"):
        load_image(tmp_path / "folder.jpg")
    locked = tmp_path / "locked.png"
    photo(4, 4).save(locked)

    def deny(path, *args, **kwargs):  # tests run as root here, where chmod 000 would not stop a read
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(imageio, "open", deny, raising=False)
    with pytest.raises(ImageDecodeError, match=r"locked.png: cannot open \(Permission denied\)"):
        load_image(locked)


def test_unsupported_format(tmp_path):
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    with pytest.raises(ImageDecodeError, match="drawing.svg: not an image or an unsupported format"):
        load_image(svg)


def test_bomb_is_refused_from_its_header_without_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageDecodeError, match="bomb"):
        load_image(png_header(50_000, 50_000), name="huge.png")
    with pytest.raises(ImageDecodeError, match=r"small.png: 100x80 = 0 MP exceeds the 0 MP limit; not decoded"):
        load_image(png_header(100, 80), max_pixels=5_000, name="small.png")
    assert decoded == []
