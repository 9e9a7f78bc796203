"""Label Studio's brush RLE: our codec against label-studio-sdk's (the reference Label Studio ships) both ways."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fcnseg.data.brush import decode_brush_rle, encode_brush_rle

brush = pytest.importorskip("label_studio_sdk.converter.brush", reason="label-studio-sdk (a dev dependency)")


def _sdk_decode(rle: list[int], height: int, width: int) -> np.ndarray:
    """The SDK's reading of a brush region: the RGBA canvas, as Label Studio's exporter decodes it."""
    return brush.decode_rle(rle).reshape(height, width, 4)


def _one_pixel(h: int, w: int, y: int, x: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y, x] = 255
    return mask


EDGE_CASES = {
    "empty": np.zeros((5, 7), np.uint8),
    "full": np.full((5, 7), 255, np.uint8),
    "one pixel first": _one_pixel(5, 7, 0, 0),
    "one pixel last": _one_pixel(5, 7, 4, 6),
    "one pixel middle": _one_pixel(9, 3, 4, 1),
    "one by one": np.full((1, 1), 255, np.uint8),
    "one row odd": (np.arange(13) % 2 * 255).astype(np.uint8)[None],
    "one column odd": (np.arange(11) % 3 == 0).astype(np.uint8)[:, None] * 255,
    "checkerboard odd": ((np.indices((17, 23)).sum(0) % 2) * 255).astype(np.uint8),
    # one run of 300*301*4 = 361200 bytes: longer than the widest count (65536), cut into pieces
    "large run": np.full((300, 301), 255, np.uint8),
    "large runs both": np.pad(np.full((150, 301), 255, np.uint8), ((0, 151), (0, 0))),
    # runs at each count-width boundary (4 bytes a pixel: 2, 4, 64 and 16384 pixels are 8, 16, 256, 65536 bytes)
    "tier edges": np.repeat(np.array([0, 255, 0, 255, 0, 255], np.uint8), [2, 4, 64, 16384, 3, 1])[None],
    "alpha values": np.array([[0, 1, 128, 254, 255]], np.uint8),
}


@pytest.mark.parametrize("name", EDGE_CASES)
def test_sdk_decodes_our_encoding(name):
    mask = EDGE_CASES[name]
    rgba = _sdk_decode(encode_brush_rle(mask), *mask.shape)
    assert (rgba == mask[..., None]).all()  # the same value on all four channels, as the SDK's mask2rle writes


@pytest.mark.parametrize("name", EDGE_CASES)
def test_we_decode_the_sdk_encoding(name):
    mask = EDGE_CASES[name]
    assert np.array_equal(decode_brush_rle(brush.mask2rle(mask), *mask.shape), mask)


@pytest.mark.parametrize("name", EDGE_CASES)
def test_round_trip_and_same_bits_as_the_sdk(name):
    mask = EDGE_CASES[name]
    ours = encode_brush_rle(mask)
    assert np.array_equal(decode_brush_rle(ours, *mask.shape), mask)
    # the SDK writes the same chunks; it pads one whole zero byte more when the stream ends on a byte boundary
    sdk = brush.mask2rle(mask)
    assert sdk[: len(ours)] == ours and all(b == 0 for b in sdk[len(ours) :])


def test_literal_chunks_and_colours_as_the_front_end_paints():
    """A canvas painted in a colour with soft edges: channels differ, single values go out as literal chunks."""
    rng = np.random.default_rng(0)
    rgba = np.zeros((6, 9, 4), np.uint8)
    rgba[1:5, 2:8] = (255, 0, 128, 255)
    rgba[1:5, 2] = (255, 0, 128, 0)
    rgba[2, 3:7, 3] = rng.integers(1, 255, 4)
    rle = brush.encode_rle(rgba.ravel())
    assert np.array_equal(decode_brush_rle(rle, 6, 9), rgba[..., 3])


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.sampled_from([0, 255])))
def test_random_masks_both_ways(mask):
    assert (_sdk_decode(encode_brush_rle(mask), *mask.shape) == mask[..., None]).all()
    assert np.array_equal(decode_brush_rle(brush.mask2rle(mask), *mask.shape), mask)


def test_bad_rle_is_one_clear_error():
    rle = encode_brush_rle(np.full((4, 4), 255, np.uint8))
    with pytest.raises(ValueError, match="holds 64 values, an RGBA image of 4x5 has 80"):
        decode_brush_rle(rle, 5, 4)
    with pytest.raises(ValueError, match="truncated"):
        decode_brush_rle(rle[:6], 4, 4)
    with pytest.raises(ValueError, match="byte values"):
        decode_brush_rle([0, 300, 1], 4, 4)
    with pytest.raises(ValueError, match="2-D"):
        encode_brush_rle(np.zeros((2, 2, 4), np.uint8))
