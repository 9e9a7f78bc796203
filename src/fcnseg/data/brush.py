"""Label Studio's brush RLE: the format of its ``BrushLabels`` regions, encoded and decoded (pure NumPy).

Label Studio stores a brush region as the RGBA pixels of an ``H x W`` canvas (``H * W * 4`` bytes, row-major,
channel last) packed with thi.ng's ``rle-pack``, and sends it as a list of byte values (``value.rle``). The bit
stream, most significant bit first::

    num:32  word_size-1:5  (rle_size-1:4) x 4      header: how many values, bits per value, the 4 count widths
    then, until ``num`` values are out, chunks of
    1  tier:2  n-1:rle_sizes[tier]  value:word_size              a run: ``value`` repeated ``n`` times
    0  tier:2  n-1:rle_sizes[tier]  value:word_size x n          ``n`` literal values

and zero bits up to a whole byte. The region is the alpha channel (what label-studio-sdk's decoder reads, and what
Label Studio's own canvas paints); a mask we send is the same value on all four channels, as the SDK's ``mask2rle``
writes it. Our own codec rather than label-studio-sdk's: fcnseg does not take the SDK (and its dependencies) at run
time, ours packs bits with NumPy instead of building a string of ``'0'``/``'1'`` characters, and a truncated or
mis-sized RLE is one clear ``ValueError``. The tests check both directions against the SDK's codec.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["decode_brush_rle", "encode_brush_rle"]

_RLE_SIZES = (3, 4, 8, 16)  # the count widths Label Studio's front end writes: runs up to 8, 16, 256, 65536
_MAX_RUN = 1 << _RLE_SIZES[-1]


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """The brush RLE (byte values) of an ``(H, W)`` mask: 0 is outside, any other ``uint8`` value the region's alpha
    (Label Studio paints 255). Every run is a repeat chunk: a pixel is four equal bytes, so no run is shorter than 4
    and a literal chunk would never be the shorter code."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a brush mask is 2-D (H, W), got shape {mask.shape}")
    flat = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    num = flat.size * 4
    fields = [(num, 32), (8 - 1, 5), *((size - 1, 4) for size in _RLE_SIZES)]
    header_values = np.array([v for v, _ in fields], dtype=np.int64)
    header_widths = np.array([w for _, w in fields], dtype=np.int64)
    if flat.size == 0:
        return _pack_bits(header_values, header_widths)

    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size]) * 4  # (runs,) in bytes of the RGBA stream
    values = flat[starts]
    # Runs longer than the widest count are cut into pieces of _MAX_RUN and a remainder.
    pieces = -(-lengths // _MAX_RUN)
    values = np.repeat(values, pieces)
    first = np.cumsum(pieces) - pieces  # index of each run's first piece
    piece_lengths = np.full(int(pieces.sum()), _MAX_RUN, dtype=np.int64)
    piece_lengths[first + pieces - 1] = lengths - (pieces - 1) * _MAX_RUN
    counts = piece_lengths - 1
    tier = np.searchsorted(np.array([(1 << s) - 1 for s in _RLE_SIZES]), counts)  # smallest width that holds it
    count_width = np.array(_RLE_SIZES)[tier]

    chunk_values = np.stack([np.ones_like(counts), tier, counts, values.astype(np.int64)], axis=1).ravel()
    chunk_widths = np.stack([np.ones_like(counts), np.full_like(counts, 2), count_width, np.full_like(counts, 8)], 1)
    return _pack_bits(np.r_[header_values, chunk_values], np.r_[header_widths, chunk_widths.ravel()])


def _pack_bits(values: np.ndarray, widths: np.ndarray) -> list[int]:
    """Each ``values[i]`` as its low ``widths[i]`` bits, most significant first, one stream, zero-padded to bytes."""
    bits = np.unpackbits(values.astype(">u4").view(np.uint8)).reshape(-1, 32)  # (fields, 32), MSB first
    keep = np.arange(32) >= (32 - widths)[:, None]
    return np.packbits(bits[keep]).tolist()


def decode_brush_rle(rle: Sequence[int] | bytes, height: int, width: int) -> np.ndarray:
    """The ``(H, W)`` ``uint8`` alpha plane of a brush RLE; ``ValueError`` if it is not one of an ``H x W`` image."""
    try:
        data = bytes(rle)
    except (TypeError, ValueError) as e:
        raise ValueError(f"brush RLE is not a list of byte values (0..255): {e}") from None
    reader = _BitReader(data)
    num = reader.read(32)
    word_size = reader.read(5) + 1
    rle_sizes = [reader.read(4) + 1 for _ in range(4)]
    if num != height * width * 4:
        raise ValueError(f"brush RLE holds {num} values, an RGBA image of {width}x{height} has {height * width * 4}")
    if word_size > 8:
        raise ValueError(f"brush RLE has {word_size}-bit values; an RGBA canvas has 8")
    out = np.empty(num, dtype=np.uint8)
    i = 0
    while i < num:
        repeat = reader.read(1)
        n = reader.read(rle_sizes[reader.read(2)]) + 1
        if i + n > num:
            raise ValueError(f"brush RLE runs past its {num} values")
        if repeat:
            out[i : i + n] = reader.read(word_size)
        else:
            out[i : i + n] = [reader.read(word_size) for _ in range(n)]
        i += n
    return out.reshape(height, width, 4)[:, :, 3].copy()


class _BitReader:
    """Reads unsigned big-endian bit fields (at most 32 bits) off a byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0  # in bits

    def read(self, nbits: int) -> int:
        start, end = self.pos, self.pos + nbits
        if end > len(self.data) * 8:
            raise ValueError("brush RLE ends in the middle of a chunk (truncated)")
        first, last = start // 8, (end + 7) // 8
        chunk = int.from_bytes(self.data[first:last], "big")
        self.pos = end
        return (chunk >> (last * 8 - end)) & ((1 << nbits) - 1)
