"""Label Studio's JSON export ("JSON" in its *Export* dialog) as a semantic segmentation dataset.

The export is a list of tasks; a task names its image in ``data.image`` and holds ``annotations``, each a list of
``result`` regions. The regions read here are those of segmentation:

* ``brushlabels``: ``value.rle`` is Label Studio's brush RLE of an RGBA canvas of ``original_width`` x
  ``original_height`` (:mod:`fcnseg.data.brush`); a pixel belongs to the region where the alpha is at least 128;
* ``polygonlabels``: ``value.points`` are ``[x, y]`` in percent of the image's width and height, rasterized as
  COCO polygons are (pycocotools, so an export read here and the same export converted to COCO give one mask).

Other regions (rectangles, keypoints, choices...) are counted and left out. The rules, each the tool's own:

* **Which annotation:** cancelled ("skipped") annotations are left out; of the rest, a ground-truth annotation is
  preferred, then the most recently updated (``updated_at``, then ``created_at``, then the highest id). A task
  without one is left out and counted; an annotation with no region is an image of background only.
* **Overlaps:** Label Studio shows a region drawn later on top of the earlier ones, so a later region paints over
  earlier ones (as the COCO export reader does for annotation tools).
* **Classes:** label 0 is ``__background__``; then every label of the project's labelling config in its order when
  a ``label_config.xml`` lies beside the export (``fcnseg train --label-studio`` saves it there), else every label
  the export uses, sorted. A label the config does not list is an error naming the task.
* **Images** are read as displayed (EXIF orientation applied), because Label Studio's regions are drawn on the
  image the browser shows; each must have the ``original_width`` x ``original_height`` its regions declare.
  An image reference is a local path under the image root (``--images``; default: the export's folder):
  ``/data/upload/P/NAME`` is ``upload/P/NAME`` there (the root is then Label Studio's ``media`` folder),
  ``/data/local-files/?d=PATH`` is ``PATH`` (the root is ``LOCAL_FILES_DOCUMENT_ROOT``), a plain path is itself
  relative to the root. A reference that leaves the root is an error: a task's author does not choose which
  files training reads.
* **Splits** are stable as a project grows: a task is in ``val`` when the hash of its id falls in one fifth of the
  hash space, else in ``train`` (``all``: every task). Tasks never move between splits as others are added.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from ..imageio import load_image
from ._drawn import drawn_item
from .brush import decode_brush_rle

__all__ = [
    "REGION_TYPES",
    "SPLITS",
    "LabelStudioSegmentation",
    "Region",
    "config_labels",
    "displayed_size",
    "image_reference",
    "is_val_task",
    "latest_annotation",
    "parse_region",
    "reference_path",
]

REGION_TYPES = ("brushlabels", "polygonlabels")
SPLITS = ("all", "train", "val")
VAL_SHARE = 5  # one task in five is validation
BRUSH_ALPHA = 128  # a brush pixel is in the region from half opacity up
BACKGROUND = "__background__"
_MAX_LABELS = 255  # labels 0..254 fit a uint8 mask beside the ignore label 255


def is_val_task(task_id: int) -> bool:
    """Whether task ``task_id`` is in the validation split: a hash of the id, so it never changes as tasks are
    added (a count-based split would move tasks that a served model has trained on into validation)."""
    digest = hashlib.sha256(f"label-studio-task:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % VAL_SHARE == 0


def _when(annotation: dict[str, Any]) -> datetime:
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    if isinstance(stamp, str):
        try:  # Python 3.10's fromisoformat does not take the "Z" Label Studio writes
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            return when if when.tzinfo else when.replace(tzinfo=datetime.now().astimezone().tzinfo)
        except ValueError:
            pass
    return datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo)


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The annotation of ``task`` that counts (see the module docstring), or None when every one was skipped."""
    kept = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    ident = lambda a: a["id"] if isinstance(a.get("id"), int) else -1  # noqa: E731
    return max(kept, key=lambda a: (bool(a.get("ground_truth")), _when(a), ident(a)))


def image_reference(task: dict[str, Any]) -> str:
    """The task's image: ``data.image``, or the task's only string value when the config names it otherwise."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise ValueError("no 'data' object")
    if isinstance(data.get("image"), str):
        return data["image"]
    strings = [v for v in data.values() if isinstance(v, str)]
    if len(strings) != 1:
        raise ValueError(f"no 'data.image', and {len(strings)} other strings to take it from")
    return strings[0]


def reference_path(reference: str) -> str:
    """A task's image reference as a relative path under the image root (see the module docstring); ValueError for
    a reference that is not a file under it (another host's URL, cloud storage, a path leaving the root)."""
    url = urlsplit(reference)
    if url.scheme not in ("", "file"):
        if url.path.startswith("/data/"):  # Label Studio's own URL, made absolute with its host
            url = urlsplit(url.path + ("?" + url.query if url.query else ""))
        else:
            raise ValueError(f"image {reference!r} is not a Label Studio upload or a local file")
    path = url.path
    if path.startswith("/data/local-files/") or path == "/data/local-files":
        path = (parse_qs(url.query).get("d") or [""])[0]
    elif path.startswith("/data/upload/"):
        path = path[len("/data/") :]
    path = posixpath.normpath(path.lstrip("/")) if path else ""
    if not path or path == "." or path.startswith("../") or path == ".." or "\x00" in path:
        raise ValueError(f"image {reference!r} names no file under the image root")
    return path


def config_labels(xml_text: str) -> list[str]:
    """The labels of a labelling config's ``BrushLabels`` and ``PolygonLabels`` tags, in their order, each once."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise ValueError(f"not a labelling config ({e})") from None
    labels: list[str] = []
    for tag in root.iter():
        if tag.tag.lower() in REGION_TYPES:
            for label in tag.iter():
                value = label.get("value")
                if label.tag == "Label" and value and value not in labels:
                    labels.append(value)
    return labels


@dataclass(frozen=True)
class Region:
    """One segmentation region of an annotation: its kind, its label, the size it was drawn on, and its shape."""

    kind: str  # brushlabels | polygonlabels
    label: str
    width: int
    height: int
    shape: Any  # the brush RLE (list of bytes) or the [[x%, y%], ...] points

    def mask(self) -> np.ndarray:
        """The region as an (H, W) bool array at the size it was drawn on."""
        if self.kind == "brushlabels":
            return decode_brush_rle(self.shape, self.height, self.width) >= BRUSH_ALPHA
        from pycocotools import mask as coco_mask

        flat = [float(v) for x, y in self.shape for v in (x * self.width / 100, y * self.height / 100)]
        if len(flat) < 6:  # fewer than 3 points enclose nothing
            return np.zeros((self.height, self.width), dtype=bool)
        return coco_mask.decode(coco_mask.frPyObjects([flat], self.height, self.width)).any(axis=2)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def parse_region(result: Any) -> Region | None:
    """A result as a :class:`Region`; None for a result of another kind; ValueError saying what is wrong."""
    if not isinstance(result, dict):
        raise ValueError("a result is not an object")
    kind = str(result.get("type", "")).lower()
    if kind not in REGION_TYPES:
        return None
    value = result.get("value")
    if not isinstance(value, dict):
        raise ValueError(f"{kind} region without a 'value' object")
    labels = value.get(kind)
    if not (isinstance(labels, list) and labels and isinstance(labels[0], str)):
        raise ValueError(f"{kind} region without a label")
    w, h = result.get("original_width"), result.get("original_height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0) or isinstance(w, bool):
        raise ValueError(f"{kind} region without original_width and original_height")
    if kind == "brushlabels":
        shape = value.get("rle")
        if not (isinstance(shape, list) and all(isinstance(b, int) and 0 <= b < 256 for b in shape)):
            raise ValueError("brush region whose 'rle' is not a list of byte values")
    else:
        shape = value.get("points")
        ok = isinstance(shape, list) and all(
            isinstance(p, list | tuple) and len(p) == 2 and all(map(_is_number, p)) for p in shape
        )
        if not ok:
            raise ValueError("polygon region whose 'points' are not [x, y] pairs")
    return Region(kind, labels[0], w, h, shape)


@dataclass
class _Task:
    id: int
    image: str  # the image reference as the task gives it
    regions: list[Region]
    problem: str | None  # why its annotation cannot be read (data check lists it; reading it raises)


class LabelStudioSegmentation:
    """A Label Studio JSON export as ``(RGB image, "L" mask)`` pairs, or ``transforms(image, mask)``.

    Args:
        export: the export file (a JSON list of tasks).
        split: ``all``, ``train`` or ``val`` (see the module docstring).
        transforms: applied to each ``(image, mask)`` pair.
        images: the image root (default: the export's folder).
        labels: the class names after the background (default: ``label_config.xml`` beside the export, else the
            labels the export uses, sorted).

    Counted while reading: ``tasks`` (in the export), ``unannotated`` (tasks left out: no annotation, or every one
    skipped), ``skipped_annotations`` and ``left_out_regions`` (regions of other kinds).
    """

    def __init__(
        self,
        export: str | Path,
        split: str = "all",
        transforms: Callable[[Image.Image, Image.Image], Any] | None = None,
        images: str | Path | None = None,
        labels: list[str] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"a Label Studio export has the splits {', '.join(SPLITS)}, not {split!r}")
        self.export = Path(export)
        if not self.export.is_file():
            raise FileNotFoundError(f"{self.export}: no such Label Studio export")
        self.image_root = Path(images) if images is not None else self.export.parent
        self.split, self.transforms = split, transforms
        try:
            tasks = json.loads(self.export.read_bytes())
            parsed = self._parse(tasks)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{self.export}: not a Label Studio JSON export ({e})") from None
        if labels is None:
            labels = self._config_labels()
        used = sorted({r.label for t in parsed for r in t.regions})
        self.config_labelled = labels is not None
        names = list(labels) if labels is not None else used
        if len(names) + 1 > _MAX_LABELS:
            raise ValueError(f"{self.export}: {len(names)} labels; masks are 8-bit, so at most 254 fit")
        self.categories = [BACKGROUND, *names]
        self._index = {name: i for i, name in enumerate(self.categories) if i}
        for t in parsed:
            unknown = sorted({r.label for r in t.regions} - self._index.keys())
            if unknown and t.problem is None:
                t.problem = f"label {unknown[0]!r} is not in the labelling config"
        self.all_tasks = parsed
        self._tasks = [t for t in parsed if split == "all" or is_val_task(t.id) == (split == "val")]

    def _config_labels(self) -> list[str] | None:
        config = self.export.parent / "label_config.xml"
        if not config.is_file():
            return None
        try:
            return config_labels(config.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{config}: {e}") from None

    def _parse(self, tasks: Any) -> list[_Task]:
        if not isinstance(tasks, list):
            raise ValueError(f"the top level is a {type(tasks).__name__}, not a list of tasks")
        self.tasks, self.unannotated, self.skipped_annotations, self.left_out_regions = len(tasks), 0, 0, 0
        out, seen = [], set()
        for task in tasks:
            if not isinstance(task, dict) or not isinstance(task.get("id"), int) or isinstance(task["id"], bool):
                raise ValueError("each task must be an object with an integer 'id'")
            if task["id"] in seen:
                raise ValueError(f"task {task['id']} is listed twice")
            seen.add(task["id"])
            anns = task.get("annotations") or []
            if not isinstance(anns, list):
                raise ValueError(f"task {task['id']}: 'annotations' is not a list")
            self.skipped_annotations += sum(1 for a in anns if isinstance(a, dict) and a.get("was_cancelled"))
            ann = latest_annotation(task)
            if ann is None:
                self.unannotated += 1
                continue
            try:
                image = image_reference(task)
            except ValueError as e:
                raise ValueError(f"task {task['id']}: {e}") from None
            out.append(self._task(task["id"], image, ann))
        return out

    def _task(self, task_id: int, image: str, ann: dict[str, Any]) -> _Task:
        results = ann.get("result") or []
        regions, problem = [], None
        if not isinstance(results, list):
            return _Task(task_id, image, [], f"annotation {ann.get('id')}: 'result' is not a list")
        for result in results:
            try:
                region = parse_region(result)
            except ValueError as e:
                problem = problem or f"annotation {ann.get('id')}: {e}"
                continue
            if region is None:
                self.left_out_regions += 1
            else:
                regions.append(region)
        sizes = {(r.width, r.height) for r in regions}
        if len(sizes) > 1 and problem is None:
            problem = f"annotation {ann.get('id')}: regions drawn on images of {len(sizes)} sizes"
        return _Task(task_id, image, regions, problem)

    def __len__(self) -> int:
        return len(self._tasks)

    def task_id(self, i: int) -> int:
        return self._tasks[i].id

    def image_path(self, i: int) -> Path:
        """Image ``i``'s local file under the image root; ValueError for a reference that is not one."""
        task = self._tasks[i]
        try:
            return self.image_root / reference_path(task.image)
        except ValueError as e:
            raise ValueError(f"{self.export}: task {task.id}: {e}") from None

    def regions(self, i: int) -> list[Region]:
        return self._tasks[i].regions

    def problem(self, i: int) -> str | None:
        """Why task ``i``'s annotation cannot be read, naming it; None when it can."""
        task = self._tasks[i]
        return None if task.problem is None else f"task {task.id}: {task.problem}"

    def declared_size(self, i: int) -> tuple[int, int] | None:
        """(W, H) task ``i``'s regions were drawn on; None for an annotation without regions."""
        regions = self._tasks[i].regions
        return (regions[0].width, regions[0].height) if regions else None

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` as displayed: from its regions, else from the file's header."""
        size = self.declared_size(i) or displayed_size(self.image_path(i))
        return size[1], size[0]

    def target(self, i: int, height: int, width: int) -> Image.Image:
        """Task ``i``'s label map at (``height``, ``width``), the size its regions were drawn on."""
        if problem := self.problem(i):
            raise ValueError(f"{self.export}: {problem}")
        target = np.zeros((height, width), dtype=np.uint8)
        for region in self._tasks[i].regions:  # later regions on top
            target[region.mask()] = self._index[region.label]
        return Image.fromarray(target)

    def size_mismatch(self, i: int, displayed: tuple[int, int]) -> str | None:
        """None if image ``i`` as displayed is the (W, H) its regions were drawn on, else why not, naming it."""
        declared = self.declared_size(i)
        if declared is None or declared == displayed:
            return None
        return (
            f"{self.image_path(i)}: {displayed[0]}x{displayed[1]} as displayed, but task {self._tasks[i].id}'s "
            f"regions were drawn on {declared[0]}x{declared[1]}"
        )

    def __getitem__(self, i: int) -> Any:
        path = self.image_path(i)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image of task {self._tasks[i].id} not found (see --images)")
        return drawn_item(self, i, load_image(path))  # upright, as Label Studio shows it


def displayed_size(path: str | Path) -> tuple[int, int]:
    """(W, H) of an image as displayed (EXIF orientation applied), read from its header."""
    with Image.open(path) as img:
        orientation = img.getexif().get(0x0112, 1)
        w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
