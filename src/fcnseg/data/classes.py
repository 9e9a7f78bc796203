"""``classes.txt``: the class names of a folder dataset and, optionally, which mask values stand for each class.

Two forms, told apart by their lines (blank lines and ``#`` comment lines are skipped; ``#RRGGBB`` is a colour):

**Plain**, one name a line; the class index is the line number (from 0) and a mask pixel's value is its class.
The ignore index (255 unless told otherwise) marks pixels left out of training and scores::

    background
    cat
    dog

**Mapped**, ``VALUE NAME`` a line, where VALUE is an integer (greyscale or index masks) or a colour ``R,G,B`` or
``#RRGGBB`` (RGB masks, as many annotation tools export them; palette PNGs are then read as their colours)::

    0 background            0,0,0 background
    255 foreground          #ff0000 road
                            255,255,255 ignore

Classes are numbered in the order their names first appear; values that share a name are merged into one class.
The name ``ignore`` is reserved: pixels with those values are left out of training and scores. In a mapped file
every value a mask holds must be listed: any other is an error (``fcnseg data check`` names the files and values)
rather than silently becoming a class or the ignore index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IGNORE", "ClassMap", "parse_classes", "read_class_map", "read_mask_array"]

IGNORE = "ignore"  # the reserved class name of a mapped classes.txt: these values are left out
INDEX_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")

_INT = re.compile(r"^\d+$")
_RGB = re.compile(r"^(\d+),(\d+),(\d+)$")
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


def _parse_value(token: str) -> tuple[int, bool] | None:
    """A mask value -> (key, is_colour); colours become ``0xRRGGBB``. None if ``token`` is not a value."""
    if _INT.match(token):
        return int(token), False
    if m := _RGB.match(token):
        rgb = [int(c) for c in m.groups()]
        if max(rgb) > 255:
            raise ValueError(f"colour {token}: components must lie in 0..255")
        return rgb[0] << 16 | rgb[1] << 8 | rgb[2], True
    if m := _HEX.match(token):
        return int(m.group(1), 16), True
    return None


def _format_key(key: int, rgb: bool) -> str:
    return f"{key >> 16},{key >> 8 & 255},{key & 255}" if rgb else str(key)


@dataclass(frozen=True)
class ClassMap:
    """Class names and how mask files encode them.

    ``values`` maps a mask value (an integer, or ``0xRRGGBB`` when ``rgb``) to a class index, or to ``None`` for
    values declared ``ignore``; it is ``None`` for a plain file, where a value is its class index.
    """

    names: tuple[str, ...]
    values: dict[int, int | None] | None = None
    rgb: bool = False

    @property
    def mapped(self) -> bool:
        return self.values is not None

    def describe(self, key: int) -> str:
        """A raw mask value as written in ``classes.txt`` (``255`` or ``255,0,0``)."""
        return _format_key(key, self.rgb)

    def read_raw(self, path: str | Path) -> np.ndarray:
        """A mask file's raw values as an (H, W) int64 array: indices, or ``0xRRGGBB`` colours for an RGB map."""
        if not self.rgb:
            return read_mask_array(path)
        try:
            with Image.open(path) as img:
                a = np.asarray(img.convert("RGB")).astype(np.int64)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            _raise_io_fault(e)
            raise ValueError(f"{path}: unreadable mask ({e})") from None
        return a[..., 0] << 16 | a[..., 1] << 8 | a[..., 2]

    def lookup(self, raw: np.ndarray, ignore_index: int = 255) -> np.ndarray:
        """Raw values -> (H, W) int64 labels: the class index, ``ignore_index``, or -1 where a value is not mapped."""
        if self.values is None:
            ok = ((raw >= 0) & (raw < len(self.names))) | (raw == ignore_index)
            return np.where(ok, raw, -1)
        keys = np.array(sorted(self.values), dtype=np.int64)
        targets = np.array([ignore_index if self.values[k] is None else self.values[k] for k in keys.tolist()])
        pos = np.searchsorted(keys, raw).clip(max=len(keys) - 1)
        return np.where(keys[pos] == raw, targets[pos], -1)

    def labels(self, path: str | Path, ignore_index: int = 255) -> np.ndarray:
        """The (H, W) uint8 label map of a mask file; values that are not mapped raise, naming the file."""
        raw = self.read_raw(path)
        out = self.lookup(raw, ignore_index)
        if (out < 0).any():
            bad = ", ".join(self.describe(v) for v in np.unique(raw[out < 0])[:8].tolist())
            raise ValueError(
                f"{path}: mask values {bad} are not classes (see classes.txt; `fcnseg data check` lists them all)"
            )
        return out.astype(np.uint8)


def _is_comment(line: str) -> bool:
    """``#`` starts a comment line, unless it starts a ``#RRGGBB`` colour."""
    return line.startswith("#") and not _HEX.match(line.split()[0])


def parse_classes(text: str, source: str = "classes.txt") -> ClassMap:
    """Parse the text of a ``classes.txt`` (see the module docstring); errors name ``source`` and the line."""
    lines = [(n, s.strip()) for n, s in enumerate(text.splitlines(), 1) if s.strip() and not _is_comment(s.strip())]
    if not lines:
        raise ValueError(f"{source}: lists no classes")
    parsed = []
    for n, line in lines:
        first, _, rest = line.replace("\t", " ").partition(" ")  # spreadsheets separate VALUE and NAME by a tab
        try:
            value = _parse_value(first) if rest.strip() else None
        except ValueError as e:
            raise ValueError(f"{source}:{n}: {e}") from None
        parsed.append((n, value, rest.strip() if value else line))
    if all(v is None for _, v, _ in parsed):
        return ClassMap(tuple(name for _, _, name in parsed))
    plain = [n for n, v, _ in parsed if v is None]
    if plain:
        raise ValueError(f"{source}:{plain[0]}: expected 'VALUE NAME' like the other lines (e.g. '255 foreground')")
    if len({rgb for _, (_, rgb), _ in parsed}) > 1:
        raise ValueError(f"{source}: mixes integer values and R,G,B colours; use one kind for all lines")
    names: list[str] = []
    values: dict[int, int | None] = {}
    for n, (key, rgb), name in parsed:
        if key in values:
            raise ValueError(f"{source}:{n}: value {_format_key(key, rgb)} is listed twice")
        if name != IGNORE and name not in names:
            names.append(name)
        values[key] = None if name == IGNORE else names.index(name)
    if not names:
        raise ValueError(f"{source}: every value is '{IGNORE}'; list at least one class")
    if len(names) > 255:
        raise ValueError(f"{source}: {len(names)} classes; masks are 8-bit, so at most 255 (plus ignore) fit")
    return ClassMap(tuple(names), values, rgb=parsed[0][1][1])


def read_class_map(root: str | Path) -> ClassMap:
    """The :class:`ClassMap` of the folder dataset at ``root`` (its ``classes.txt``)."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing (one class name a line, the first being index 0; or 'VALUE NAME' lines)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets and Notepad may start the file with a BOM
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_classes(text, str(path))


def _raise_io_fault(e: Exception) -> None:
    """Re-raise an I/O fault (a vanished file, a failing drive: an ``OSError`` with an errno) as itself: it is
    not a bad mask, and the command says so in its own words. Decoders report bad data without an errno."""
    if isinstance(e, OSError) and e.errno is not None:
        raise e


def read_mask_array(path: str | Path) -> np.ndarray:
    """A mask file's raw label values as an (H, W) integer array; palette PNGs give their indices, not colours.

    A greyscale mask with an alpha channel (``LA``, as image editors save it) gives its grey values: the alpha
    says how a viewer blends the mask, not which class a pixel is.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode, a = img.mode, np.asarray(img.getchannel("L") if img.mode == "LA" else img)
            mode = "L" if mode == "LA" else mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        _raise_io_fault(e)
        raise ValueError(f"{path}: unreadable mask ({e})") from None
    if mode not in INDEX_MODES:
        raise ValueError(
            f"{path}: mask must be a single-channel index or palette PNG (got mode {mode}); "
            "for colour-coded masks list each colour in classes.txt ('R,G,B NAME' lines)"
        )
    return a.astype(np.int64)
