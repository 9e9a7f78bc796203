"""``check_folder``: what is wrong with a folder dataset, found before training on it rather than during.

Every image and mask is decoded once. Errors: unreadable files, images without masks and masks without images,
image/mask size mismatches, mask values that are neither a class nor the ignore index. Warnings: masks holding
only 0 and 255 (binary masks whose foreground the default ignore index would silently drop), classes with no pixel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..imageio import load_image
from .folder import IMAGE_SUFFIXES, read_classes, read_mask_array

__all__ = ["CheckReport", "SplitCheck", "check_folder"]


@dataclass
class SplitCheck:
    """Findings for one split; file names are relative to the dataset root."""

    split: str
    pairs: int = 0
    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "file: reason"
    size_mismatches: list[str] = field(default_factory=list)  # "mask: mask WxH, image WxH"
    out_of_range: dict[str, list[int]] = field(default_factory=dict)  # mask -> values outside classes and ignore
    binary_0_255: list[str] = field(default_factory=list)
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0

    @property
    def errors(self) -> int:
        n = len(self.images_without_mask) + len(self.masks_without_image) + len(self.unreadable)
        return n + len(self.size_mismatches) + len(self.out_of_range)


@dataclass
class CheckReport:
    root: str
    categories: list[str]
    ignore_index: int
    splits: list[SplitCheck]

    @property
    def ok(self) -> bool:
        return all(s.errors == 0 for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def format(self, examples: int = 5) -> str:
        """A readable report: one line per problem kind with a few example files, then class frequencies."""
        k = len(self.categories)
        lines = [f"{self.root}: {k} classes ({', '.join(self.categories)}), ignore index {self.ignore_index}"]
        for s in self.splits:
            lines.append(f"split {s.split}: {s.pairs} image/mask pairs")
            problems = [
                ("images without a mask", s.images_without_mask),
                ("masks without an image", s.masks_without_image),
                ("unreadable files", s.unreadable),
                ("image/mask size mismatches", s.size_mismatches),
                (
                    f"masks with values outside the classes 0..{k - 1} and the ignore index",
                    [f"{m}: {_values(v)}" for m, v in s.out_of_range.items()],
                ),
            ]
            for what, items in problems:
                if items:
                    more = f" (+{len(items) - examples} more)" if len(items) > examples else ""
                    lines.append(f"  error: {len(items)} {what}{more}")
                    lines += [f"    {x}" for x in items[:examples]]
            if s.binary_0_255:
                lines.append(
                    f"  warning: {len(s.binary_0_255)} masks hold only 0 and 255; with ignore index "
                    f"{self.ignore_index} their 255 pixels are {'ignored' if self.ignore_index == 255 else 'invalid'}"
                    " (store the foreground as 1), e.g. " + ", ".join(s.binary_0_255[:3])
                )
            total = sum(s.class_pixels) + s.ignored_pixels
            if total:
                pairs = list(zip(self.categories, s.class_pixels, strict=True))
                freq = "  ".join(f"{c} {100 * n / total:.2f}%" for c, n in pairs)
                lines.append(f"  class pixels: {freq}  ignored {100 * s.ignored_pixels / total:.2f}%")
                never = [c for c, n in pairs if n == 0]
                if never:
                    lines.append(f"  warning: {len(never)} classes have no pixel in this split: {', '.join(never)}")
        lines.append("ok" if self.ok else f"{sum(s.errors for s in self.splits)} problems found")
        return "\n".join(lines)


def _values(v: list[int]) -> str:
    return ", ".join(map(str, v[:8])) + (", ..." if len(v) > 8 else "")


def check_folder(root: str | Path, splits: list[str] | None = None, ignore_index: int = 255) -> CheckReport:
    """Check a folder dataset (``classes.txt``, ``{split}/{images,masks}/``); ``splits`` default to all present."""
    root = Path(root)
    categories = read_classes(root)
    if splits is None:
        splits = sorted(p.name for p in root.iterdir() if (p / "images").is_dir() or (p / "masks").is_dir())
        if not splits:
            raise FileNotFoundError(f"{root}: no {{split}}/images/ folder found")
    report = CheckReport(str(root), categories, ignore_index, [])
    for split in splits:
        report.splits.append(_check_split(root, split, len(categories), ignore_index))
    return report


def _check_split(root: Path, split: str, k: int, ignore_index: int) -> SplitCheck:
    out = SplitCheck(split, class_pixels=[0] * k)
    images_dir, masks_dir = root / split / "images", root / split / "masks"
    images = {p.stem: p for p in sorted(images_dir.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(masks_dir.glob("*.png"))}
    if not images_dir.is_dir():
        out.unreadable.append(f"{split}/images: no such folder")
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    out.images_without_mask = [rel(p) for s, p in images.items() if s not in masks]
    out.masks_without_image = [rel(p) for s, p in masks.items() if s not in images]
    for stem in sorted(images.keys() & masks.keys()):
        out.pairs += 1
        try:
            w, h = load_image(images[stem], exif_transpose=False).size  # as datasets read it
        except ValueError as e:
            out.unreadable.append(str(e))
            continue
        try:
            m = read_mask_array(masks[stem])
        except ValueError as e:
            out.unreadable.append(str(e))
            continue
        if m.shape != (h, w):
            out.size_mismatches.append(f"{rel(masks[stem])}: mask {m.shape[1]}x{m.shape[0]}, image {w}x{h}")
        values, counts = np.unique(m, return_counts=True)
        bad = [int(v) for v in values if v != ignore_index and not (0 <= v < k)]
        if bad:
            out.out_of_range[rel(masks[stem])] = bad
        if set(values.tolist()) == {0, 255}:
            out.binary_0_255.append(rel(masks[stem]))
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            if 0 <= v < k and v != ignore_index:
                out.class_pixels[v] += c
            elif v == ignore_index:
                out.ignored_pixels += c
    return out
