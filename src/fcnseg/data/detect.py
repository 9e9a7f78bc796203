"""Which kind of dataset a folder holds, read from its layout: the one rule ``eval``, ``train`` and ``data check``
follow when ``--dataset`` is not given.

Tried in order, the first that matches wins:

1. ``classes.txt`` -> ``folder`` (:mod:`.folder`);
2. a COCO instances file -> ``coco`` (:mod:`.coco`): ``annotations/instances_*.json`` (COCO 2017's
   ``instances_val2017.json``, CVAT's ``instances_default.json``), else a ``.json`` in ``annotations/`` or in the
   folder itself that holds COCO's ``images`` list (Label Studio's ``result.json``). Each file names a split, as
   :func:`.coco.find_coco_annotations` reads them back: ``instances_val2017.json`` -> ``val``,
   ``instances_default.json`` -> ``default``, ``result.json`` -> ``result``;
3. a file, Label Studio's JSON export (a list of tasks) -> ``label-studio`` (:mod:`.labelstudio`);
4. VOC's devkit layout -> ``voc`` (:mod:`.voc`): ``JPEGImages/`` and ``ImageSets/Segmentation/`` in
   ``VOCdevkit/VOC2012``, ``VOC2012`` or the folder itself.

Only names are looked at, plus the first bytes of a ``.json`` that is not called ``instances_*``: a 500 MB
annotation file is not read to detect it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DetectedDataset", "coco_annotation_files", "detect_dataset"]

_COCO2017 = re.compile(r"instances_(train|val)2017")
_PEEK = 1 << 16  # bytes of a .json read to tell a COCO file from other JSON


@dataclass(frozen=True)
class DetectedDataset:
    """What :func:`detect_dataset` found: the kind, the files that decided it (relative to the root) and, for
    COCO, the split each annotation file names."""

    kind: str
    evidence: tuple[Path, ...]
    splits: tuple[str, ...] = ()

    def describe(self) -> str:
        """The line the commands print, e.g. ``dataset: detected coco (annotations/instances_val2017.json)``."""
        return f"dataset: detected {self.kind} ({', '.join(map(str, self.evidence))})"


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_PEEK).lstrip()
    except OSError:
        return b""


def _looks_like_coco(path: Path) -> bool:
    head = _head(path)
    return head.startswith(b"{") and b'"images"' in head


def _looks_like_label_studio(path: Path) -> bool:
    """Label Studio's JSON export: a list of tasks, each with its ``data``."""
    head = _head(path)
    return path.suffix.lower() == ".json" and head.startswith(b"[") and b'"data"' in head


def coco_annotation_files(root: str | Path) -> list[tuple[str, Path]]:
    """(split, annotation file) for each COCO instances file under ``root``, by file name."""
    root, found = Path(root), []
    for path in sorted((root / "annotations").glob("instances_*.json")):
        m = _COCO2017.fullmatch(path.stem)
        found.append((m.group(1) if m else path.stem.removeprefix("instances_"), path))
    if not found:
        candidates = sorted((root / "annotations").glob("*.json")) + sorted(root.glob("*.json"))
        found = [(p.stem, p) for p in candidates if _looks_like_coco(p)]
    return found


def detect_dataset(root: str | Path) -> DetectedDataset:
    """The kind of dataset at ``root`` (see the module docstring); a ``ValueError`` says what was looked for."""
    root = Path(root)
    if root.is_file() and _looks_like_label_studio(root):
        return DetectedDataset("label-studio", (Path(root.name),))
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    if (root / "classes.txt").is_file():
        return DetectedDataset("folder", (Path("classes.txt"),))
    if coco := coco_annotation_files(root):
        return DetectedDataset("coco", tuple(p.relative_to(root) for _, p in coco), tuple(s for s, _ in coco))
    for voc in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (voc / "JPEGImages").is_dir() and (voc / "ImageSets" / "Segmentation").is_dir():
            return DetectedDataset("voc", (voc.relative_to(root) / "ImageSets" / "Segmentation",))
    raise ValueError(
        f"{root}: cannot tell which kind of dataset this is: no classes.txt (folder dataset), no COCO instances file "
        "(annotations/instances_*.json, or a COCO .json in annotations/ or the folder), no VOC layout "
        "(VOCdevkit/VOC2012/JPEGImages and ImageSets/Segmentation); name it with --dataset"
    )
