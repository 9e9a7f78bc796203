"""Decoding images the way a person sees them: EXIF orientation applied, any mode to RGB, bombs refused.

Every entry point (CLI, Python API, server, datasets) decodes through :func:`load_image`, so a file is
read the same way everywhere and every failure is an :class:`ImageDecodeError` with a one-line reason.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import storage
from .memory import available_bytes

__all__ = ["MAX_PIXELS", "ImageDecodeError", "load_image", "to_rgb"]

# About 179 MP: where Pillow itself refuses to open a file (twice its warning level). Above any common camera.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
# Pillow holds a pixel of any 8-bit mode in 4 bytes (RGB as RGBX), I and F too; conversion or EXIF rotation makes
# a second copy: what decoding an image needs at its peak, refused up front when more than the memory available
DECODE_BYTES_PER_PIXEL = 8
SCALE_BAND = 1 << 18  # pixels per band when high-bit-depth pixels are scaled to 8 bits (2 MB in float64)


class ImageDecodeError(ValueError):
    """An input could not be turned into an RGB image; ``str(e)`` names the source and the problem."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit and float scaled down, alpha composited on white, CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _scaled_to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    return img.convert("RGB")


def _scaled_to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit "L": 16-bit by 65535, others by their maximum.

    Scaled a band of rows at a time, in place, so the float64 working copy stays at 2 MB whatever the image
    size (a whole 4000x4000 image in float64 would be 128 MB per decode, its temporaries as much again).
    """
    a = np.asarray(img)  # its stored dtype: uint16, int32 or float32
    top = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
    out = np.empty(a.shape, np.uint8)
    rows = max(1, SCALE_BAND // max(a.shape[1], 1))
    for r in range(0, a.shape[0], rows):
        band = a[r : r + rows] / top
        band *= 255
        out[r : r + rows] = band.round(out=band).clip(0, 255, out=band)
    return Image.fromarray(out)


def load_image(
    source: str | storage.AnyPath | bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
    exif_transpose: bool = True,
) -> Image.Image:
    """Decode a file path, a URL (streamed, :func:`fcnseg.storage.open_read`) or raw bytes into an upright RGB image.

    The first frame of animations is used. Images with more than ``max_pixels`` pixels are refused from
    their header, before any pixel is decoded (Pillow refuses files above :data:`MAX_PIXELS` on its own, so a
    larger ``max_pixels`` does not lift that). ``exif_transpose=False`` keeps the stored pixel order, for
    datasets (COCO) whose annotations were drawn on the unrotated pixels.
    """
    label = name or (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
    remote = not isinstance(source, bytes) and storage.is_remote(source)
    try:
        if isinstance(source, bytes):
            fp = io.BytesIO(source)
        else:
            fp = storage.open_read(source) if remote else open(source, "rb")  # noqa: SIM115
    except storage.StorageError as e:
        if e.run_wide:  # every other input would fail the same way: the command stops with this one line
            raise
        raise ImageDecodeError(f"{label}: cannot open ({e})") from None
    except OSError as e:
        raise ImageDecodeError(f"{label}: cannot open ({e.strerror or e})") from None
    with fp:
        try:
            img = Image.open(fp)  # Pillow may warn above 89 MP: catch_warnings is not thread-safe, so let it
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(
                    f"{label}: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the {max_pixels / 1e6:.0f} MP limit; not decoded"
                )
            _check_memory(label, w, h)
            img.seek(0)
            img.load()
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
        except ImageDecodeError:
            raise
        except UnidentifiedImageError:
            kind = "empty file" if _is_empty(source) else "not an image or an unsupported format"
            raise ImageDecodeError(f"{label}: {kind}") from None
        except Image.DecompressionBombError as e:
            raise ImageDecodeError(f"{label}: refused as a decompression bomb ({e})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            if remote and isinstance(fault := storage.translate(e, label), storage.StorageError):
                raise fault from e  # the store failed while streaming: not the image's fault
            raise ImageDecodeError(f"{label}: corrupt or truncated image ({e})") from None
        if img.width < 1 or img.height < 1:
            raise ImageDecodeError(f"{label}: image has no pixels")
        return to_rgb(img)


def _check_memory(label: str, w: int, h: int) -> None:
    """Refuse an image whose decoding needs more memory than is available (rather than being killed for it)."""
    need, free = w * h * DECODE_BYTES_PER_PIXEL, available_bytes()
    if free is not None and need > free:
        raise ImageDecodeError(
            f"{label}: {w}x{h} needs {need / 1e6:.0f} MB of memory to decode but {free / 1e6:.0f} MB is available; "
            "not decoded (free memory, or split the image)"
        )


def _is_empty(source: str | storage.AnyPath | bytes) -> bool:
    if isinstance(source, bytes):
        return len(source) == 0
    if storage.is_remote(source):
        return (storage.identity(storage.as_path(source)) or {}).get("size") == 0
    return Path(source).stat().st_size == 0
