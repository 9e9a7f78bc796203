"""Image files for tests: every odd and broken input the decoder and ``fcnseg segment`` must handle."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(h: int, w: int, seed: int = 0) -> Image.Image:
    """Smooth random colours (a JPEG-friendly stand-in for a photo)."""
    small = np.random.default_rng(seed).integers(0, 256, (max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels but which carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def exif_rotated(upright: Image.Image) -> Image.Image:
    """Stored pixels plus EXIF orientation 6 (rotate 90 degrees clockwise to display) that display as ``upright``."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise; orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.info["exif"] = exif.tobytes()
    return stored


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def write_good_oddities(folder: Path) -> dict[str, tuple[int, int]]:
    """Valid but unusual images; returns file name -> (height, width) as displayed."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo(40, 56)
    rgb.convert("L").save(folder / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.png")
    Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).save(folder / "deep16.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    stored = exif_rotated(rgb)
    stored.save(folder / "rotated.jpg", exif=stored.info["exif"], quality=95)
    photo(1, 1).save(folder / "one.png")
    photo(8, 300).save(folder / "thin.png")
    return {
        "gray.png": (40, 56),
        "rgba.png": (40, 56),
        "palette.png": (40, 56),
        "deep16.png": (40, 56),
        "cmyk.jpg": (40, 56),
        "rotated.jpg": (40, 56),
        "one.png": (1, 1),
        "thin.png": (8, 300),
    }


def write_bad_files(folder: Path) -> dict[str, str]:
    """Files that must be refused; returns file name -> a phrase the one-line error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = jpeg_bytes(photo(48, 64))
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    good_png = io.BytesIO()
    photo(24, 24).save(good_png, format="PNG")
    data = bytearray(good_png.getvalue())
    data[60:90] = b"\xff" * 30  # inside the compressed pixel data
    (folder / "corrupt.png").write_bytes(bytes(data))
    (folder / "text.jpg").write_text("this is not a picture\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "bomb.png").write_bytes(png_header(50_000, 50_000))
    return {
        "truncated.jpg": "truncated",
        "corrupt.png": "corrupt",
        "text.jpg": "not an image",
        "empty.png": "empty file",
        "bomb.png": "bomb",
    }
