"""High-bit-depth uploads decode in bounded memory: never a float64 copy of the whole image."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
from PIL import Image

from fcnseg.imageio import load_image


def png16(width: int, height: int) -> bytes:
    ramp = (np.arange(width * height, dtype=np.uint64) * 7919 % 65536).astype(np.uint16).reshape(height, width)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    return buf.getvalue()


def test_16bit_png_decodes_in_bounded_memory():
    data = png16(1500, 1000)  # 1.5 MP: a float64 copy alone would be 12 MB, its temporaries as much again
    tracemalloc.start()
    image = load_image(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.mode == "RGB" and image.size == (1500, 1000)
    # Pillow's bytes and the uint16 array (3 MB each), the 8-bit result (1.5 MB), one 2 MB band: 9.5 MB;
    # the whole-image float64 version peaked at 36 MB
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB"


def test_16bit_scaling_equals_the_exact_formula():
    raw = np.asarray(Image.open(io.BytesIO(png16(300, 700))))  # more rows than one band
    want = (raw.astype(np.float64) / 65535 * 255).round().astype(np.uint8)
    got = np.asarray(load_image(png16(300, 700)))
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
