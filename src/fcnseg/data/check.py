"""What is wrong with a dataset, found before training on it rather than after.

``check_folder`` (``fcnseg data check``) decodes every image and mask of a folder dataset once. Errors: unreadable
files, images without masks and masks without images, image/mask size mismatches, mask values that
``classes.txt`` does not map (or, for a plain ``classes.txt``, that are neither a class index nor the ignore index),
and a class with no pixel in the training split (a model cannot learn it; it is how a 0/255 mask set read with a
plain ``classes.txt`` shows up, its 255s being the ignore index).

``check_coco`` (``fcnseg data check --dataset coco``) checks a COCO file read as a dataset: image files present,
each stored at the width and height its annotations were drawn on (an EXIF-rotated photo is named as such),
annotations of listed categories with well-formed polygons or RLE of their image's size; categories without
annotations are a warning (an export lists every label of the project, and they keep their label so that all
splits agree). ``data check`` also reports the share of labelled pixels where annotations overlap, and which rule
resolves them (COCO 2017: ignored; exports: the later annotation on top).

``check_labelstudio`` (``fcnseg data check --dataset label-studio EXPORT``) checks a Label Studio JSON export the
same way (image files present, displayed at the size their regions were drawn on, regions readable, of labels the
config lists), and counts what is left out: tasks without a kept annotation, skipped annotations, regions that are
not segmentation.

``validate_training_data`` runs the mask checks when ``fit`` starts and raises :class:`DataError` with the same
report. It reads only the masks, and keeps their statistics in a cache keyed by each file's path, size and
mtime (``$TORCH_HOME/fcnseg/data-check/``), so a second run over an unchanged dataset costs a ``stat`` per mask.
For a COCO training split it runs ``check_coco`` (no decoding: a header read per image).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from .._stamp import file_stamp
from ..imageio import load_image
from .classes import ClassMap, read_class_map
from .coco import CocoSegmentation, annotation_mask, check_segmentation
from .folder import IMAGE_SUFFIXES, FolderSegmentation, image_header_size
from .labelstudio import LabelStudioSegmentation, displayed_size

__all__ = [
    "CheckReport",
    "CocoCheck",
    "DataError",
    "LabelStudioCheck",
    "MaskStats",
    "SplitCheck",
    "check_coco",
    "check_folder",
    "check_labelstudio",
    "mask_stats",
    "validate_training_data",
]


class DataError(ValueError):
    """A dataset that cannot be trained on as it is; the message is the :class:`CheckReport` explaining why."""


@dataclass
class MaskStats:
    """One mask file: its (H, W), pixels per class, ignored pixels and the raw values no class maps."""

    shape: tuple[int, int]
    class_pixels: list[int]
    ignored: int
    unmapped: list[int]
    binary_0_255: bool


def mask_stats(path: str | Path, classes: ClassMap, ignore_index: int = 255) -> MaskStats:
    """Read a mask file through ``classes`` and count what it holds."""
    raw = classes.read_raw(path)
    values, counts = _value_counts(raw)
    labels = classes.lookup(values, ignore_index)  # mapped per distinct value, not per pixel
    class_pixels = [0] * len(classes.names)
    ignored = 0
    for label, c in zip(labels.tolist(), counts.tolist(), strict=True):
        if label == ignore_index:
            ignored += c
        elif label >= 0:
            class_pixels[label] += c
    binary = not classes.rgb and values.tolist() == [0, 255]
    unmapped = values[labels < 0].tolist()
    return MaskStats((int(raw.shape[0]), int(raw.shape[1])), class_pixels, ignored, unmapped, binary)


def _value_counts(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer array and their counts, ascending (bincount: several times faster than unique)."""
    if raw.size and raw.min() >= 0 and raw.max() < 1 << 16:
        counts = np.bincount(raw.ravel())
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(raw, return_counts=True)


@dataclass
class SplitCheck:
    """Findings for one split; file names are relative to the dataset root."""

    split: str
    training: bool = False  # a class without pixels is an error here, a warning elsewhere
    pairs: int = 0
    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "file: reason"
    size_mismatches: list[str] = field(default_factory=list)  # "mask: mask WxH, image WxH"
    out_of_range: dict[str, list[str]] = field(default_factory=dict)  # mask -> values classes.txt does not map
    binary_0_255: list[str] = field(default_factory=list)
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0

    def add(self, mask: str, stats: MaskStats, classes: ClassMap) -> None:
        """Count one mask's statistics into this split."""
        if stats.unmapped:
            self.out_of_range[mask] = [classes.describe(v) for v in stats.unmapped]
        if stats.binary_0_255:
            self.binary_0_255.append(mask)
        self.class_pixels = [a + b for a, b in zip(self.class_pixels, stats.class_pixels, strict=True)]
        self.ignored_pixels += stats.ignored

    @property
    def empty_classes(self) -> list[int]:
        """Indices of the classes with no pixel in this split (once some mask was counted)."""
        if not self.pairs:
            return []
        return [i for i, n in enumerate(self.class_pixels) if n == 0]

    @property
    def errors(self) -> int:
        n = len(self.images_without_mask) + len(self.masks_without_image) + len(self.unreadable)
        empty = 1 if self.training and self.empty_classes else 0
        return n + len(self.size_mismatches) + len(self.out_of_range) + empty


@dataclass
class CheckReport:
    root: str
    categories: list[str]
    ignore_index: int
    splits: list[SplitCheck]
    mapped: bool = False  # classes.txt maps values ("VALUE NAME" lines) rather than listing names

    @property
    def ok(self) -> bool:
        return all(s.errors == 0 for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def format(self, examples: int = 5) -> str:
        """A readable report: one line per problem kind with a few example files, then class frequencies."""
        k = len(self.categories)
        lines = [f"{self.root}: {k} classes ({', '.join(self.categories)}), ignore index {self.ignore_index}"]
        unmapped = (
            "masks with values classes.txt does not map (add a 'VALUE NAME' line, or 'VALUE ignore' to leave them out)"
            if self.mapped
            else f"masks with values outside the classes 0..{k - 1} and the ignore index {self.ignore_index}"
        )
        for s in self.splits:
            lines.append(f"split {s.split}: {s.pairs} image/mask pairs")
            problems = [
                ("images without a mask", s.images_without_mask),
                ("masks without an image", s.masks_without_image),
                ("unreadable files", s.unreadable),
                ("image/mask size mismatches", s.size_mismatches),
                (unmapped, [f"{m}: {_values(v)}" for m, v in s.out_of_range.items()]),
            ]
            for what, items in problems:
                if items:
                    more = f" (+{len(items) - examples} more)" if len(items) > examples else ""
                    lines.append(f"  error: {len(items)} {what}{more}")
                    lines += [f"    {x}" for x in items[:examples]]
            total = sum(s.class_pixels) + s.ignored_pixels
            if total:
                pairs = list(zip(self.categories, s.class_pixels, strict=True))
                freq = "  ".join(f"{c} {100 * n / total:.2f}%" for c, n in pairs)
                lines.append(f"  class pixels: {freq}  ignored {100 * s.ignored_pixels / total:.2f}%")
            never = [self.categories[i] for i in s.empty_classes]
            if never:
                kind = "error" if s.training else "warning"
                lines.append(f"  {kind}: {len(never)} classes have no pixel in this split: {', '.join(never)}")
                if s.training:
                    lines.append(
                        "    a model cannot learn a class it never sees: label it, or remove it from classes.txt"
                    )
            if s.binary_0_255 and not self.mapped:
                lines.append(
                    f"  hint: {len(s.binary_0_255)} masks hold only 0 and 255 (e.g. {', '.join(s.binary_0_255[:3])}); "
                    f"with a plain classes.txt, 255 is the ignore index. Map the values instead: write classes.txt "
                    "as the two lines '0 background' and '255 foreground' (names of your choice)"
                )
        lines.append("ok" if self.ok else f"{sum(s.errors for s in self.splits)} problems found")
        return "\n".join(lines)


def _values(v: list[str]) -> str:
    return ", ".join(v[:8]) + (", ..." if len(v) > 8 else "")


def check_folder(
    root: str | Path, splits: list[str] | None = None, ignore_index: int = 255, train_split: str = "train"
) -> CheckReport:
    """Check a folder dataset (``classes.txt``, ``{split}/{images,masks}/``); ``splits`` default to all present.

    ``train_split`` is the split every class must occur in.
    """
    root = Path(root)
    classes = read_class_map(root)
    if splits is None:
        splits = sorted(p.name for p in root.iterdir() if (p / "images").is_dir() or (p / "masks").is_dir())
        if not splits:
            raise FileNotFoundError(f"{root}: no {{split}}/images/ folder found")
    report = CheckReport(str(root), list(classes.names), ignore_index, [], mapped=classes.mapped)
    for split in splits:
        report.splits.append(_check_split(root, split, classes, ignore_index, split == train_split))
    return report


def _check_split(root: Path, split: str, classes: ClassMap, ignore_index: int, training: bool) -> SplitCheck:
    out = SplitCheck(split, training, class_pixels=[0] * len(classes.names))
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
            stats = mask_stats(masks[stem], classes, ignore_index)
        except ValueError as e:
            out.unreadable.append(str(e))
            continue
        if stats.shape != (h, w):
            out.size_mismatches.append(f"{rel(masks[stem])}: mask {stats.shape[1]}x{stats.shape[0]}, image {w}x{h}")
        out.add(rel(masks[stem]), stats, classes)
    return out


def validate_training_data(dataset: Any, ignore_index: int = 255) -> None:
    """Raise :class:`DataError` if ``dataset`` (a training split) has unmapped mask values or a class without pixels.

    Folder datasets are checked from their masks (statistics cached per file, see the module docstring); COCO
    files with :func:`check_coco` (image files present, categories listed, RLE sizes); VOC passes as it is.
    """
    if isinstance(dataset, CocoSegmentation | LabelStudioSegmentation):
        check = check_coco(dataset) if isinstance(dataset, CocoSegmentation) else check_labelstudio(dataset)
        if not check.ok:
            raise DataError(f"the training data has problems (`fcnseg data check` shows them all):\n{check.format()}")
        return
    if not isinstance(dataset, FolderSegmentation):
        return
    root, classes = dataset.root, dataset.classes
    split = SplitCheck(dataset.split, training=True, class_pixels=[0] * len(classes.names))
    for path, stats in _cached_mask_stats(dataset.masks, classes, ignore_index).items():
        split.pairs += 1
        split.add(str(Path(path).relative_to(root)), stats, classes)
    report = CheckReport(str(root), list(classes.names), ignore_index, [split], mapped=classes.mapped)
    if not report.ok:
        raise DataError(
            f"the training data has problems (`fcnseg data check {root}` shows them all):\n{report.format()}"
        )


def _cache_file(masks: list[Path], classes: ClassMap, ignore_index: int) -> Path:
    import torch

    key = json.dumps([str(masks[0].parent.resolve()) if masks else "", repr(classes), ignore_index])
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(torch.hub.get_dir()).parent / "fcnseg" / "data-check" / f"{name}.json"


def _cached_mask_stats(masks: list[Path], classes: ClassMap, ignore_index: int) -> dict[str, MaskStats]:
    """:func:`mask_stats` of every mask, reusing the cached entry of a file whose size and mtime are unchanged."""
    cache = _cache_file(masks, classes, ignore_index)
    try:
        old = json.loads(cache.read_text())
    except (OSError, ValueError):
        old = {}
    out, entries, changed = {}, {}, False
    for path in masks:
        stamp = file_stamp(path)
        entry = old.get(str(path))
        if stamp is not None and entry is not None and entry[0] == list(stamp):
            stats = MaskStats(**entry[1])
            stats.shape = tuple(stats.shape)
        else:
            stats, changed = mask_stats(path, classes, ignore_index), True
        out[str(path)] = stats
        entries[str(path)] = [stamp, asdict(stats)]
    if changed or len(entries) != len(old):
        try:
            with atomic_path(cache) as tmp:
                tmp.write_text(json.dumps(entries))
        except OSError:  # a read-only cache only costs the next run a full scan
            pass
    return out


@dataclass
class CocoCheck:
    """Findings for one COCO annotation file read as a dataset (file names as the annotation file gives them)."""

    ann_file: str
    categories: list[str]
    images: int = 0
    missing_images: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)  # "file: reason"
    size_mismatches: list[str] = field(default_factory=list)  # stored size is not the declared width x height
    bad_annotations: list[str] = field(default_factory=list)  # "annotation ID on FILE: reason"
    annotations_per_class: list[int] = field(default_factory=list)  # index 0 (background) stays 0
    left_out: int = 0  # annotations of listed categories that the protocol does not keep (COCO 2017: non-VOC)
    images_without_annotations: int = 0
    overlaps_ignored: bool = True  # COCO 2017's rule; in an export the annotation listed later is on top
    labelled_pixels: int | None = None  # counted only with check_coco(..., pixels=True)
    overlap_pixels: int | None = None  # labelled pixels under two or more kept annotations

    @property
    def errors(self) -> int:
        return sum(map(len, (self.missing_images, self.unreadable_images, self.size_mismatches, self.bad_annotations)))

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def format(self, examples: int = 5) -> str:
        lines = [
            f"{self.ann_file}: {len(self.categories)} classes ({', '.join(self.categories)}), {self.images} images"
        ]
        problems = (
            ("image files not found", self.missing_images),
            ("unreadable images", self.unreadable_images),
            ("images whose stored size is not the size their annotations were drawn on", self.size_mismatches),
            ("bad annotations", self.bad_annotations),
        )
        for what, items in problems:
            if items:
                more = f" (+{len(items) - examples} more)" if len(items) > examples else ""
                lines.append(f"  error: {len(items)} {what}{more}")
                lines += [f"    {x}" for x in items[:examples]]
        pairs = list(zip(self.categories, self.annotations_per_class, strict=True))[1:]
        lines.append("  annotations: " + "  ".join(f"{c} {n}" for c, n in pairs))
        if self.left_out:
            lines.append(f"  note: {self.left_out} annotations of categories outside these classes count as background")
        if self.labelled_pixels:
            rule = (
                "ignored (255), as COCO 2017's protocol says"
                if self.overlaps_ignored
                else "the later annotation is on top"
            )
            share = 100 * (self.overlap_pixels or 0) / self.labelled_pixels
            lines.append(f"  overlaps: {share:.2f}% of labelled pixels lie under two or more annotations: {rule}")
        unused = [c for c, n in pairs if n == 0]
        if unused:
            lines.append(
                f"  warning: {len(unused)} categories have no annotation here: {', '.join(unused)} "
                "(kept, so that every split of the export has the same labels; a model never learns them)"
            )
        if self.images_without_annotations:
            lines.append(f"  note: {self.images_without_annotations} images have no annotation (all background)")
        lines.append("ok" if self.ok else f"{self.errors} problems found")
        return "\n".join(lines)


def check_coco(dataset: Any, pixels: bool = False) -> CocoCheck:
    """Check a :class:`~fcnseg.data.coco.CocoSegmentation` without decoding an image: image files present, their
    stored size (from the header) the declared one, annotations of the file's categories with well-formed
    polygons or RLE of the image's size; count annotations per class.

    ``pixels`` also rasterizes the kept annotations to count labelled and overlapping pixels (``data check``).
    """
    ids = dataset.category_ids
    listed = dataset.file_category_ids
    out = CocoCheck(str(dataset.ann_file), list(dataset.categories), len(dataset), annotations_per_class=[0] * len(ids))
    out.overlaps_ignored = dataset.overlaps_ignored
    if pixels:
        out.labelled_pixels = out.overlap_pixels = 0
    for i in range(len(dataset)):
        info = dataset.image_info(i)
        image_ok = _check_coco_image(dataset, i, out)
        anns = dataset.annotations(i)
        out.images_without_annotations += not anns
        kept = []
        for a in anns:
            where = f"annotation {a.get('id')} on {info['file_name']}"
            if a["category_id"] not in listed:
                out.bad_annotations.append(f"{where}: category id {a['category_id']} is not in the file's categories")
                continue
            if a["category_id"] not in ids:
                out.left_out += 1
                continue
            try:
                check_segmentation(a.get("segmentation"), info["height"], info["width"])
            except ValueError as e:
                out.bad_annotations.append(f"{where}: {e}")
                continue
            out.annotations_per_class[ids.index(a["category_id"])] += 1
            kept.append(a)
        if pixels and kept and image_ok:  # rasterized at a size a real file has
            cover = sum(
                annotation_mask(a["segmentation"], info["height"], info["width"]).astype(np.int32) for a in kept
            )
            out.labelled_pixels += int((cover > 0).sum())
            out.overlap_pixels += int((cover > 1).sum())
    return out


def _check_coco_image(dataset: Any, i: int, out: CocoCheck) -> bool:
    """Whether image ``i`` exists, its header reads, and its stored size is the one the annotation file declares;
    what is wrong goes into ``out``."""
    try:
        path = dataset.image_path(i)
    except FileNotFoundError:
        out.missing_images.append(dataset.image_info(i)["file_name"])
        return False
    return _check_header_size(dataset, i, path, _stored_size, out)


def _stored_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image's stored pixels, from its header (COCO's sizes do not apply EXIF rotation)."""
    h, w = image_header_size(path)
    return w, h


@dataclass
class LabelStudioCheck(CocoCheck):
    """Findings for one split of a Label Studio JSON export; annotations are counted as regions, and what the
    reader leaves out is counted too."""

    split: str = "all"
    tasks: int = 0  # in the whole export
    unannotated_tasks: int = 0  # no annotation, or every one skipped: left out
    skipped_annotations: int = 0
    overlaps_ignored: bool = False  # a region drawn later is on top

    def format(self, examples: int = 5) -> str:
        lines = super().format(examples).split("\n")
        lines[0] = (
            f"{self.ann_file} (split {self.split}): {len(self.categories)} classes ({', '.join(self.categories)}), "
            f"{self.images} annotated tasks"
        )
        lines = [line.replace("  annotations: ", "  regions: ", 1) for line in lines]
        lines = [line.replace("categories have no annotation here", "labels have no region here") for line in lines]
        notes = []
        if self.unannotated_tasks:
            notes.append(
                f"  note: {self.unannotated_tasks} of the export's {self.tasks} tasks have no annotation (or only "
                "skipped ones) and are left out"
            )
        if self.skipped_annotations:
            notes.append(f"  note: {self.skipped_annotations} skipped (cancelled) annotations are left out")
        if self.left_out:
            lines = [ln for ln in lines if "count as background" not in ln]
            notes.append(f"  note: {self.left_out} regions that are not brush or polygon labels are left out")
        return "\n".join(lines[:-1] + notes + lines[-1:])


def check_labelstudio(dataset: LabelStudioSegmentation, pixels: bool = False) -> LabelStudioCheck:
    """Check a :class:`~fcnseg.data.labelstudio.LabelStudioSegmentation` split without decoding an image: image
    files present, displayed at the size their regions declare, regions readable and of listed labels; count
    regions per class (``pixels``: also rasterize them to count labelled and overlapping pixels)."""
    k = len(dataset.categories)
    out = LabelStudioCheck(
        str(dataset.export), list(dataset.categories), len(dataset), annotations_per_class=[0] * k,
        split=dataset.split, tasks=dataset.tasks, unannotated_tasks=dataset.unannotated,
        skipped_annotations=dataset.skipped_annotations, left_out=dataset.left_out_regions,
    )  # fmt: skip
    if pixels:
        out.labelled_pixels = out.overlap_pixels = 0
    index = {name: i for i, name in enumerate(dataset.categories)}
    for i in range(len(dataset)):
        if problem := dataset.problem(i):
            out.bad_annotations.append(problem)
            continue
        regions = dataset.regions(i)
        out.images_without_annotations += not regions
        for region in regions:
            out.annotations_per_class[index[region.label]] += 1
        if not _check_labelstudio_image(dataset, i, out) or not pixels or not regions:
            continue
        try:
            cover = sum(region.mask().astype(np.int32) for region in regions)
        except ValueError as e:  # a brush RLE that is not one of its image
            out.bad_annotations.append(f"task {dataset.task_id(i)}: {e}")
            continue
        out.labelled_pixels += int((cover > 0).sum())
        out.overlap_pixels += int((cover > 1).sum())
    return out


def _check_labelstudio_image(dataset: LabelStudioSegmentation, i: int, out: LabelStudioCheck) -> bool:
    """Whether task ``i``'s image is a file under the image root, readable, displayed at its regions' size."""
    try:
        path = dataset.image_path(i)
    except ValueError as e:
        out.missing_images.append(str(e))
        return False
    if not path.is_file():
        out.missing_images.append(f"{path} (task {dataset.task_id(i)})")
        return False
    return _check_header_size(dataset, i, path, displayed_size, out)


def _check_header_size(
    dataset: Any, i: int, path: Path, read_size: Callable[[Path], tuple[int, int]], out: CocoCheck
) -> bool:
    """Whether the header of image ``i`` at ``path`` reads and ``read_size`` (its (W, H) as the dataset's
    annotations see it: stored or displayed) is the size they were drawn on; what is wrong goes into ``out``."""
    from PIL import Image

    try:
        size = read_size(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        out.unreadable_images.append(f"{path}: {e}")
        return False
    if problem := dataset.size_mismatch(i, size):
        out.size_mismatches.append(problem)
        return False
    return True
